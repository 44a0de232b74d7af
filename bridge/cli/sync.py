"""`ent-bridge sync SOURCE... --plan|--apply`: reconcile rooms with the directory."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys


async def _run(args: argparse.Namespace) -> int:
    from bridge.config import load_config
    from bridge.errors import BridgeError, InputError
    from bridge.lease import LeaseHeld
    from bridge.matrix.appservice_api import AppserviceAPI
    from bridge.reconcile import render
    from bridge.reconcile.sync import run_sync
    from bridge.store import open_store

    if args.config_stdin:  # a running bridge hands its own configuration over (bridge/sync_process.py)
        from bridge.config_transfer import loads

        config = loads(sys.stdin.read())
    else:
        config = load_config(args.config)
    sources = args.sources or list(config.directory_sources)
    if not sources:
        print("ent-bridge: error: no SOURCE given and directory.sources is empty", file=sys.stderr)
        return 2
    store = await open_store(config.database_url)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    # Ctrl-C or SIGTERM during an apply: what is in flight ends, nothing more starts (exit 6).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        result = await run_sync(config, sources, store=store, api=api, apply=args.apply,
                                allow_mass_removal=args.allow_mass_removal, offline=args.offline,
                                full_observe=args.full_read, wait_for_writer=not args.no_wait, role=args.role,
                                stop=stop)
    except LeaseHeld as exc:
        print(f"ent-bridge: {exc}", file=sys.stderr)
        return 5
    except InputError as exc:
        if args.format != "summary":
            raise
        print(json.dumps({"input_error": str(exc)}))
        return 1
    except BridgeError as exc:
        if args.format != "summary":
            raise
        print(json.dumps({"error": str(exc)}))
        return 1
    finally:
        await api.close()
        await store.close()
    if args.format == "summary":  # one line for the running bridge that asked for this sync
        from bridge.sync_process import SyncOutcome

        print(json.dumps(SyncOutcome.of(result).to_json()))
    elif args.format == "json":
        out = render.to_json(result.plan, result.verdict)
        if result.report is not None:
            out["applied"] = {"done": result.report.done, "failed": result.report.failed}
        if result.residual is not None:
            out["residual"] = render.to_json(result.residual)
        json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        print(render.to_text(result.plan, result.verdict))
        if result.report is not None:
            print(f"Applied {result.report.done} actions, {len(result.report.failed)} failed.")
            for key, err in result.report.failed[:20]:
                print(f"  {key}: {err}")
        if result.residual is not None and not result.residual.is_empty():
            print("Verification: the homeserver still differs after the apply:")
            print(render.to_text(result.residual, limit=50))
    if result.report is not None and result.report.interrupted:
        print(f"Interrupted: {result.report.done} actions done, {result.report.interrupted} not started. Run the "
              "same `ent-bridge sync --apply` again to finish: every step is idempotent.", file=sys.stderr)
        return 6
    if not result.verdict.ok:
        return 3
    if result.report is not None and result.report.failed:
        return 4
    if result.residual is not None and not result.residual.is_empty():
        return 4  # applied, but the verification still finds differences: re-run, or look
    return 0


def _cmd(args: argparse.Namespace) -> int:
    from bridge import logging as blog

    blog.configure(level="warning" if args.format == "json" else "info")
    return asyncio.run(_run(args))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sync", help="plan or apply the rooms the directory calls for")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="directory sources (default: from the config)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--plan", action="store_true", help="print the plan; write nothing")
    mode.add_argument("--apply", action="store_true", help="apply the plan (after the guards)")
    p.add_argument("--format", choices=("text", "json", "summary"), default="text",
                   help="text (default) or json; summary: one line, for ent-bridge run")
    p.add_argument("--config-stdin", action="store_true", help=argparse.SUPPRESS)  # from ent-bridge run
    p.add_argument("--role", default="sync", help=argparse.SUPPRESS)  # names the writer in the lease
    p.add_argument("--allow-mass-removal", action="store_true",
                   help="apply even when the guards refuse (many removals, shrunken directory)")
    p.add_argument("--offline", action="store_true",
                   help="plan without asking the homeserver (as if no room existed yet)")
    p.add_argument("--no-wait", action="store_true",
                   help="with --apply: refuse at once when another process (ent-bridge run) is applying, "
                        "instead of waiting for it")
    p.add_argument("--full-read", action="store_true",
                   help="read every room's state, not only the rooms the homeserver reports as changed")
    p.set_defaults(func=_cmd)
