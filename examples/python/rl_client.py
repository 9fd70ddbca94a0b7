"""Publish trading events the way the Python trading stack does, and print rl-v2's decisions.

Usage:
    python rl_client.py [--url nats://127.0.0.1:4222] [--symbol BTCUSDT] [--timeout 10]

It subscribes to both decision subjects, publishes PREDICTION_GENERATED, TRADE_EXECUTED and
POSITION_CLOSED for one symbol (each wrapped in the stack's envelope, the payload as a JSON
string), prints each decision as it arrives, and exits 0 once it has the meta-strategy and the
position-sizing decision for this run's trace ids (1 on timeout).
"""

import argparse
import asyncio
import json
import sys
import time
import uuid

import nats


def envelope(event_type: str, payload: dict, trace_id: str) -> bytes:
    """The stack's event envelope: the payload travels as a JSON string."""
    return json.dumps(
        {
            "event_type": event_type,
            "payload": json.dumps(payload),
            "trace_id": trace_id,
            "correlation_id": str(uuid.uuid4()),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "source": "rl-v2-example",
        }
    ).encode()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    nc = await nats.connect(args.url)
    run = uuid.uuid4().hex[:8]
    prediction_trace, trade_trace = f"pred-{run}", f"trade-{run}"
    wanted = {prediction_trace, trade_trace}
    done = asyncio.Event()

    async def on_decision(msg):
        decision = json.loads(msg.data)
        print(f"{msg.subject}: {json.dumps(decision, sort_keys=True)}", flush=True)
        wanted.discard(decision.get("trace_id"))
        if not wanted:
            done.set()

    await nc.subscribe("RL_META_STRATEGY_DECISION", cb=on_decision)
    await nc.subscribe("RL_POSITION_SIZING_DECISION", cb=on_decision)
    await nc.flush()

    prices = [100.0, 100.4, 100.9, 101.3, 101.0, 101.8, 102.5, 102.2, 103.0, 103.6, 104.1, 104.0]
    await nc.publish(
        "PREDICTION_GENERATED",
        envelope(
            "PREDICTION_GENERATED",
            {
                "symbol": args.symbol.lower(),
                "side": "BUY",
                "confidence": 0.72,
                "timeframe": "1h",
                "model_version": "ensemble-v3",
                "metadata": {},
                "market_features": {"price_history": prices},
            },
            prediction_trace,
        ),
    )
    await nc.publish(
        "TRADE_EXECUTED",
        envelope(
            "TRADE_EXECUTED",
            {
                "symbol": args.symbol,
                "side": "BUY",
                "entry_price": 104.0,
                "position_size_usd": 1500.0,
                "leverage": 10.0,
                "order_id": "8812231",
                "account_balance": 10250.0,
                "metadata": {},
            },
            trade_trace,
        ),
    )
    await nc.publish(
        "POSITION_CLOSED",
        envelope(
            "POSITION_CLOSED",
            {
                "symbol": args.symbol,
                "entry_price": 104.0,
                "exit_price": 105.1,
                "size_usd": 1500.0,
                "leverage": 10.0,
                "is_long": True,
                "pnl_usd": 15.9,
                "pnl_pct": 1.06,
                "max_drawdown_pct": 0.4,
                "exit_reason": "TP",
                "market_condition": None,
                "metadata": {},
            },
            f"close-{run}",
        ),
    )
    await nc.flush()
    try:
        await asyncio.wait_for(done.wait(), args.timeout)
    except asyncio.TimeoutError:
        print(f"timed out waiting for decisions {sorted(wanted)}", file=sys.stderr)
        await nc.close()
        return 1
    await nc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
