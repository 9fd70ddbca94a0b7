//! The engine's side of operator control: commands, the risk gate's checks, refusals, the
//! circuit breakers and the cooldown. The rules themselves live in [`crate::control`].

use super::{At, Engine, Outcome, Tally};
use crate::control::gate::{self, Refused, TradeFacts};
use crate::control::{decode_command, Refusal, BREAKER_WHO};
use crate::domain::agent::AgentKind;
use crate::domain::qlearning::ActionSet;
use crate::event::{Event, Trade};

impl Engine {
    /// Decodes and applies one control command at `seq` (the control subject's message, in the
    /// same sequence as events): the trading state moves to what the command asks. A payload
    /// that does not decode is rejected like an event's, with the same codes.
    pub fn ingest_control(
        &mut self,
        seq: u64,
        payload: &[u8],
        received_at: f64,
        max_payload_bytes: usize,
    ) -> Outcome {
        if seq <= self.state.last_applied_seq {
            return Outcome::AlreadyApplied;
        }
        let command = match decode_command(payload, max_payload_bytes) {
            Ok(c) => c,
            Err(error) => {
                self.reject(seq, error.code());
                return Outcome::Rejected(error);
            }
        };
        self.state.last_applied_seq = seq;
        self.state.counters.control_commands += 1;
        let equity = self.state.equity.equity();
        let change = self
            .state
            .control
            .command(command, seq, received_at, equity);
        // An operator's command supersedes a breaker's halt: no cooldown ends it.
        self.state.control.breakers.halted_at = None;
        Outcome::Applied {
            symbol: String::new(),
            decisions: Vec::new(),
            updates: Vec::new(),
            tally: Tally::default(),
            refusals: Vec::new(),
            state_changes: change.into_iter().collect(),
        }
    }

    /// The checks every decision goes through: the trading state and the rate limit.
    pub(super) fn gate_common(&mut self, symbol: &str, now: f64) -> Result<(), Refused> {
        let control = &mut self.state.control;
        gate::check_common(
            control.state,
            &self.config.control.gate,
            &mut control.rates,
            symbol,
            now,
        )
    }

    /// The sizing actions allowed for trade `t`, or the refusal.
    pub(super) fn gate_trade(
        &mut self,
        symbol: &str,
        now: f64,
        t: &Trade,
    ) -> Result<ActionSet, Refused> {
        self.gate_common(symbol, now)?;
        let facts = TradeFacts {
            position_size_usd: t.position_size_usd,
            account_balance: t.account_balance,
            opens_position: !self.state.positions.contains_key(symbol),
            open_positions: self.state.positions.len(),
        };
        let c = &self.config.control;
        gate::sizing_mask(
            self.state.control.state,
            c.reducing_max_leverage,
            &c.gate,
            self.state.sizing.allowed(),
            &facts,
        )
    }

    /// Records a refused decision: counted by reason and handed out in the event's outcome.
    /// Nothing pending is created, so no reward can reach it.
    pub(super) fn refuse(
        &mut self,
        seq: u64,
        event: &Event,
        at: At,
        agent: AgentKind,
        (reason, detail): Refused,
    ) {
        *self.state.counters.refusals.entry(reason).or_default() += 1;
        tracing::debug!(seq, symbol = %event.symbol, reason = reason.as_str(), %detail, "decision refused");
        self.refusals.push(Refusal {
            reason,
            agent,
            symbol: event.symbol.clone(),
            trace_id: event.trace_id.clone(),
            event_seq: seq,
            trading_state: self.state.control.state,
            detail,
            timestamp: at.event_time,
        });
    }

    /// Runs the circuit breakers on a close; a trip moves the state up (never down).
    pub(super) fn check_breakers(
        &mut self,
        seq: u64,
        now: f64,
        pnl_pct: f64,
        before: f64,
        after: f64,
    ) {
        let config = &self.config.control.breakers;
        let control = &mut self.state.control;
        let trips = control
            .breakers
            .on_close(config, pnl_pct, before, after, now);
        for trip in trips {
            let target = trip.breaker.target();
            if target <= control.state {
                continue;
            }
            let reason = trip.describe();
            if let Some(change) =
                control.change(target, reason, BREAKER_WHO.into(), Some(trip), seq, now)
            {
                if change.new == crate::control::TradingState::Halted {
                    control.breakers.halted_at = Some(now);
                }
                self.changes.push(change);
            }
        }
    }

    /// Ends a breaker's halt once `breakers.halt_cooldown_secs` have passed on the engine's
    /// clock: back to `ACTIVE`, breakers re-armed.
    pub(super) fn cool_down(&mut self, seq: u64, now: f64) {
        let config = &self.config.control.breakers;
        let equity = self.state.equity.equity();
        let control = &mut self.state.control;
        if control.state != crate::control::TradingState::Halted
            || !control.breakers.cooled_down(config, now)
        {
            return;
        }
        let reason = format!(
            "cooldown of {} s after a breaker's halt ended",
            config.halt_cooldown_secs
        );
        control.breakers.rearm(equity);
        if let Some(change) = control.change(
            crate::control::TradingState::Active,
            reason,
            BREAKER_WHO.into(),
            None,
            seq,
            now,
        ) {
            self.changes.push(change);
        }
    }
}
