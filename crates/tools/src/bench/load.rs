//! The load: cycles of prediction → trade → close over many symbols, sent by their own task,
//! with each decision matched to its event by trace id.

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use rl_v2_service::settings::Subjects;

/// How long the receiver waits for the next straggler once everything is sent: a decision this
/// late counts as lost. Long enough that a loaded machine (a JetStream redelivery, a checkpoint,
/// a descheduled process) is not mistaken for a loss; a run that loses nothing never waits for it.
const DRAIN: Duration = Duration::from_secs(15);

/// How events are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the service answers, with at most `window` decisions outstanding.
    Saturate {
        /// Outstanding decisions allowed.
        window: usize,
    },
    /// A fixed rate of events per second, whatever the answers.
    Rate {
        /// Events per second.
        per_sec: u64,
    },
}

/// What one load run saw.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Events published.
    pub events: u64,
    /// Decisions the events should cause (one per prediction and per trade).
    pub expected: u64,
    /// Decisions received.
    pub received: u64,
    /// From the first event sent to the last decision received.
    pub elapsed: Duration,
    /// Decision latencies, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    /// Events per second over the run.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Decisions per second over the run.
    pub fn decisions_per_sec(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile of latency (0 when there is none).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }

    /// Decisions that never arrived.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

/// What the events look like.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Shape {
    /// Symbols the cycles run over.
    pub symbols: u64,
    /// Prices in each prediction's history.
    pub history: usize,
    /// Whether the history sits under `market_features.price_history`, as the stack sends it,
    /// rather than at the top level.
    pub nested: bool,
}

impl Shape {
    /// The load the original figures were measured on: a 12-price history at the top level.
    pub fn flat(symbols: u64) -> Self {
        Self {
            symbols,
            history: FLAT_PRICES,
            nested: false,
        }
    }

    /// Shaped like the stack's own events: the history under `market_features`.
    pub fn stack(symbols: u64, history: usize) -> Self {
        Self {
            symbols,
            history,
            nested: true,
        }
    }

    fn prices(&self, cycle: u64) -> String {
        if !self.nested && self.history == FLAT_PRICES {
            return FLAT_HISTORY.to_string();
        }
        let drift = (cycle % 5) as f64 * 0.1;
        let prices: Vec<String> = (0..self.history)
            .map(|i| {
                format!(
                    "{:.2}",
                    100.0 + drift + 0.4 * i as f64 - 0.3 * (i % 3) as f64
                )
            })
            .collect();
        format!("[{}]", prices.join(","))
    }
}

/// Prices in [`FLAT_HISTORY`].
const FLAT_PRICES: usize = 12;
/// The history of the flat shape.
const FLAT_HISTORY: &str =
    "[100.0,100.4,100.9,101.3,101.0,101.8,102.5,102.2,103.0,103.6,104.1,104.0]";

/// The payload of event `n` (cycle `n / 3`, symbol `cycle % symbols`).
pub fn event(n: u64, shape: &Shape, subjects: &Subjects) -> (String, Bytes, bool) {
    let cycle = n / 3;
    let sym = format!("B{}USDT", cycle % shape.symbols.max(1));
    let conf = (cycle % 10) as f64 / 10.0 + 0.05;
    match n % 3 {
        0 => {
            let prices = shape.prices(cycle);
            let body = if shape.nested {
                format!(
                    r#"{{"symbol":"{sym}","confidence":{conf},"trace_id":"b{n}","market_features":{{"price_history":{prices}}}}}"#
                )
            } else {
                format!(
                    r#"{{"symbol":"{sym}","confidence":{conf},"trace_id":"b{n}","price_history":{prices}}}"#
                )
            };
            (
                subjects.prediction_generated.clone(),
                Bytes::from(body),
                true,
            )
        }
        1 => (
            subjects.trade_executed.clone(),
            Bytes::from(format!(
                r#"{{"symbol":"{sym}","leverage":10,"portfolio_exposure":0.2,"confidence":{conf},"trace_id":"b{n}"}}"#
            )),
            true,
        ),
        _ => (
            subjects.position_closed.clone(),
            Bytes::from(format!(
                r#"{{"symbol":"{sym}","pnl_pct":{},"trace_id":"b{n}"}}"#,
                (cycle % 7) as f64 - 3.0
            )),
            false,
        ),
    }
}

/// The event number in a decision's trace id (`"trace_id":"b<n>"`).
fn trace_number(payload: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"trace_id\":\"b";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n: u64 = 0;
    let mut any = false;
    for d in digits {
        n = n * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(n)
}

/// Sends `events` events to `url` paced by `pace` and measures the decisions that come back.
pub async fn run(
    url: &str,
    subjects: &Subjects,
    shape: Shape,
    events: u64,
    pace: Pace,
) -> Result<LoadResult, String> {
    let sub_client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let pub_client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let meta = sub_client
        .subscribe(subjects.meta_decision.clone())
        .await
        .map_err(|e| e.to_string())?;
    let sizing = sub_client
        .subscribe(subjects.sizing_decision.clone())
        .await
        .map_err(|e| e.to_string())?;
    sub_client.flush().await.map_err(|e| e.to_string())?;
    let mut decisions = futures::stream::select_all([meta, sizing]);

    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let window = match pace {
        Pace::Saturate { window } => window,
        Pace::Rate { .. } => Semaphore::MAX_PERMITS,
    };
    let permits = Arc::new(Semaphore::new(window));
    let expected = (0..events).filter(|n| n % 3 != 2).count() as u64;
    let start = Instant::now();

    let sender = {
        let (sent_at, permits, subjects) = (sent_at.clone(), permits.clone(), subjects.clone());
        tokio::spawn(async move {
            let mut ticker = match pace {
                Pace::Rate { per_sec } => {
                    let period = Duration::from_secs_f64(1.0 / per_sec.max(1) as f64);
                    let mut t = tokio::time::interval(period.max(Duration::from_micros(1)));
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    Some(t)
                }
                Pace::Saturate { .. } => None,
            };
            for n in 0..events {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let (subject, payload, wants_decision) = event(n, &shape, &subjects);
                if wants_decision {
                    match permits.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => break,
                    }
                    if let Ok(mut m) = sent_at.lock() {
                        m.insert(n, Instant::now());
                    }
                }
                if pub_client.publish(subject, payload).await.is_err() {
                    break;
                }
            }
            let _ = pub_client.flush().await;
        })
    };

    let mut result = LoadResult {
        events,
        expected,
        ..LoadResult::default()
    };
    let mut last = start;
    let mut sender = Some(sender);
    while result.received < expected {
        let idle = if sender.as_ref().is_some_and(|s| !s.is_finished()) {
            Duration::from_secs(30)
        } else {
            DRAIN
        };
        let next = tokio::time::timeout(idle, decisions.next()).await;
        let Ok(Some(msg)) = next else { break };
        let now = Instant::now();
        if let Some(n) = trace_number(&msg.payload) {
            let sent = sent_at.lock().ok().and_then(|mut m| m.remove(&n));
            if let Some(sent) = sent {
                result.received += 1;
                result.latencies.push(now - sent);
                last = now;
                permits.add_permits(1);
            }
        }
    }
    if let Some(s) = sender.take() {
        s.abort();
        let _ = s.await;
    }
    result.elapsed = last - start;
    result.latencies.sort_unstable();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_numbers_are_read_from_decisions() {
        assert_eq!(
            trace_number(br#"{"a":1,"trace_id":"b12345","x":2}"#),
            Some(12345)
        );
        assert_eq!(trace_number(br#"{"trace_id":"c1"}"#), None);
        assert_eq!(trace_number(br#"{"trace_id":"b"}"#), None);
    }

    #[test]
    fn cycles_are_prediction_trade_close() {
        let s = rl_v2_service::settings::Settings::defaults().subjects;
        let kinds: Vec<String> = (0..3).map(|n| event(n, &Shape::flat(10), &s).0).collect();
        assert_eq!(
            kinds,
            ["PREDICTION_GENERATED", "TRADE_EXECUTED", "POSITION_CLOSED"]
        );
        let (_, p, _) = event(4, &Shape::flat(10), &s);
        let text = String::from_utf8(p.to_vec()).unwrap();
        assert!(text.contains("\"trace_id\":\"b4\"") && text.contains("B1USDT"));
    }

    #[test]
    fn stack_shaped_predictions_carry_their_history_under_market_features() {
        let s = rl_v2_service::settings::Settings::defaults().subjects;
        for shape in [Shape::flat(500), Shape::stack(500, 20)] {
            let (subject, p, _) = event(3 * 501, &shape, &s);
            let e = rl_v2_core::event::decode(
                rl_v2_core::event::EventKind::PredictionGenerated,
                &p,
                1 << 16,
                0.0,
            )
            .unwrap();
            assert_eq!(subject, "PREDICTION_GENERATED");
            assert_eq!(e.symbol, "B1USDT");
            let rl_v2_core::event::EventBody::Prediction(prediction) = e.body else {
                panic!("{e:?}");
            };
            assert_eq!(
                prediction.price_history.map(|h| h.len()),
                Some(shape.history)
            );
        }
    }

    #[test]
    fn quantiles_of_sorted_latencies() {
        let r = LoadResult {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..LoadResult::default()
        };
        assert_eq!(r.quantile(0.5), Duration::from_millis(51));
        assert_eq!(r.quantile(0.99), Duration::from_millis(99));
        assert_eq!(r.quantile(1.0), Duration::from_millis(100));
    }
}
