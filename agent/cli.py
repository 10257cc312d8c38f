"""The ``emo-agent`` command line (also ``python -m agent``).

    emo-agent serve [--host H] [--port P]          voice server: page at http://H:P/, websocket at /ws
    emo-agent worker [--name NAME]                 perception worker on the Redis Streams job queue
    emo-agent perceive FILE [--json]               one audio file in, one perception out
    emo-agent eval --manifest M.csv [--out R.json] [--limit N]
    emo-agent export --session ID [--format jsonl|csv|parquet|emotionml] [--out FILE] [--since T] [--until T]
                     [--audio-dir DIR]
    emo-agent plot --session ID --out FILE.png     valence/arousal over turns, labels, policies
    emo-agent report --session ID --out FILE.html  transcript, reasoning per turn, the plot
    emo-agent talk FILE [--url ws://...]           stream an audio file to a running server
    emo-agent train --data crema-d=DIR --out RUN   fine-tune the dual-encoder AudioLLM (docs/audiollm.md)
    emo-agent train-dialogue --data ED_DIR --out RUN  fine-tune the reply model (docs/dialogue.md)
    emo-agent train-text-emotion --data ED_DIR --out RUN  the text-emotion model (docs/perception.md)

User errors (missing file, not audio, bad manifest, no Redis) exit non-zero with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import NoReturn

from agent import __version__, memory
from agent.config import Settings


class UserError(Exception):
    """Something the user can fix; printed as one line, exit code 2."""


def _settings() -> Settings:
    return Settings()


def cmd_serve(args: argparse.Namespace) -> int:
    from agent.perception_service import QueueUnavailable
    from agent.wiring import RedisUnavailable, Services
    from dialogue.extensions import ExtensionError
    from perception.base import PerceptionError
    from voice.server import run_server

    settings = _settings()
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port

    async def main() -> None:
        try:
            services = await Services.create(settings)
        except (
            RedisUnavailable,
            QueueUnavailable,
            PerceptionError,
            ExtensionError,
            FileNotFoundError,
            ImportError,
        ) as exc:
            raise UserError(str(exc)) from exc
        memory.trim()  # what loading and warming up the models freed
        trim_s = settings.malloc_trim_s
        trimmer = asyncio.create_task(memory.trim_every(trim_s)) if trim_s else None
        try:
            await run_server(services, host, port)
        except OSError as exc:  # port in use, address not available
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        finally:
            if trimmer is not None:
                trimmer.cancel()
            await services.aclose()

    asyncio.run(main())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from agent.worker import WorkerStartError, run_worker

    try:
        served = run_worker(_settings(), args.name)
    except WorkerStartError as exc:
        raise UserError(str(exc)) from exc
    print(f"{served} turns perceived", file=sys.stderr)
    return 0


def cmd_perceive(args: argparse.Namespace) -> int:
    from perception.audio import load_audio
    from perception.base import PerceptionError
    from perception.registry import build_perceiver

    path = Path(args.file)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    try:
        audio = load_audio(path)
        perceiver = build_perceiver(_settings().perception)
        perception = perceiver.perceive(audio)
    except PerceptionError as exc:
        raise UserError(f"{path}: {exc}") from exc
    if args.json:
        print(perception.model_dump_json(indent=2))
        return 0
    emo = perception.emotion
    top = sorted(emo.scores.items(), key=lambda kv: -kv[1])[:3]
    print(f"transcript: {perception.transcript}")
    print(f"emotion:    {emo.label}  (" + ", ".join(f"{k} {v:.2f}" for k, v in top) + ")")
    print(f"valence {emo.valence:+.2f}  arousal {emo.arousal:+.2f}")
    print(f"reasoning:  {perception.reasoning}")
    for ev in perception.evidence:
        what = f"{ev.cue}={ev.value:+.2f}" if ev.kind == "acoustic" else f'"{ev.quote}"'
        print(f"  - [{ev.kind}] {what}: {ev.claim}")
    print(f"model: {perception.model}  timings_ms: {perception.timings_ms}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from perception.base import PerceptionError
    from perception.evaluation import ManifestError, evaluate, format_report, read_manifest
    from perception.registry import build_perceiver

    out = _writable(args.out)  # checked before the run, so a long evaluation is never lost
    try:
        rows, skipped = read_manifest(Path(args.manifest))
    except ManifestError as exc:
        raise UserError(str(exc)) from exc
    if skipped:
        unmapped = ", ".join(f"{label or '(empty)'} x{n}" for label, n in skipped.most_common())
        print(f"skipped rows with labels outside the label set: {unmapped}", file=sys.stderr)
    try:
        perceiver = build_perceiver(_settings().perception)
    except PerceptionError as exc:
        raise UserError(str(exc)) from exc
    report = evaluate(
        perceiver,
        rows,
        limit=args.limit,
        progress=True,
        skipped=skipped,
        speaker_baseline=not args.no_speaker_baseline,
    )
    print(format_report(report))
    if out is not None:
        out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"report written to {out}", file=sys.stderr)
    return 0


def _writable(out: str | None) -> Path | None:
    """``--out`` as a Path whose folder exists, or a UserError now (not after the work is done)."""
    if out is None:
        return None
    path = Path(out)
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    return path


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


async def _load_sessions(redis_url: str, sessions: list[str], all_sessions: bool) -> list:
    import redis.asyncio as aioredis

    from agent.trajectory import TrajectoryLog

    client = aioredis.Redis.from_url(redis_url)
    try:
        try:
            await client.ping()
        except Exception as exc:
            raise UserError(f"cannot reach Redis at {redis_url} ({exc})") from exc
        log = TrajectoryLog(client)
        names = await log.sessions() if all_sessions else sessions
        records = []
        for name in names:
            if not await log.exists(name):
                raise UserError(f"no session {name!r} in {redis_url}")
            records.extend(await log.read(name))
        # Time order across sessions; within a turn the user's record comes before the reply.
        return sorted(records, key=lambda r: (r.t_start, r.speaker != "user"))
    finally:
        await client.aclose()


async def _save_audio(redis_url: str, records: list, audio_dir: Path) -> int:
    """Write the kept audio of user turns as ``{session_id}_{turn_id}.wav``; returns how many."""
    import redis.asyncio as aioredis

    from agent.trajectory import TrajectoryLog

    audio_dir.mkdir(parents=True, exist_ok=True)
    client = aioredis.Redis.from_url(redis_url)
    saved = 0
    try:
        log = TrajectoryLog(client)
        for record in records:
            if not record.audio_ref:
                continue
            wav = await log.read_audio(record.audio_ref)
            if wav is None:  # expired before the record did, or deleted
                continue
            (audio_dir / f"{record.session_id}_{record.turn_id}.wav").write_bytes(wav)
            saved += 1
    finally:
        await client.aclose()
    return saved


def cmd_export(args: argparse.Namespace) -> int:
    from agent.export import ExportError, filter_time, parse_time, write_export

    if not args.session and not args.all:
        raise UserError("give --session ID (repeatable) or --all")
    settings = _settings()
    records = asyncio.run(_load_sessions(settings.redis_url, args.session or [], args.all))
    out = _writable(args.out)
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        records = filter_time(records, since, until)
        text = write_export(records, args.format, out)
    except ExportError as exc:
        raise UserError(str(exc)) from exc
    if text is not None:
        sys.stdout.write(text)
    else:
        print(f"{len(records)} turns written to {out}", file=sys.stderr)
    if args.audio_dir:
        saved = asyncio.run(_save_audio(settings.redis_url, records, Path(args.audio_dir)))
        print(f"{saved} user-turn wav files written to {args.audio_dir}", file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from agent.plots import plot_trajectory, user_turns

    out = _writable(args.out)
    assert out is not None
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"cannot plot to {out}: use a .png, .svg or .pdf file")
    records = asyncio.run(_load_sessions(_settings().redis_url, [args.session], False))
    out = plot_trajectory(records, out)
    print(f"{len(user_turns(records))} turns plotted to {out}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from agent.report import render_report

    out = _writable(args.out)
    assert out is not None
    records = asyncio.run(_load_sessions(_settings().redis_url, [args.session], False))
    out.write_text(render_report(records, args.session), encoding="utf-8")
    print(f"report of {len(records)} turns written to {args.out}", file=sys.stderr)
    return 0


def cmd_talk(args: argparse.Namespace) -> int:
    from voice.client import main as client_main

    argv = [args.file, "--url", args.url]
    if args.session:
        argv += ["--session", args.session]
    if args.out:
        argv += ["--out", args.out]
    if args.realtime:
        argv.append("--realtime")
    if args.token:
        argv += ["--token", args.token]
    from agent.config import Settings

    configured = Settings().voice.auth_token.get_secret_value() or None
    return client_main(argv, default_token=configured)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit code 2 (``emo-agent CMD: reason``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="emo-agent", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"emo-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("serve", help="run the voice server (web page + websocket)")
    p.add_argument("--host", default=None, help="default: EMO_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: EMO_PORT or 8765")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="serve perception jobs from the Redis Streams queue (docs/scaling.md)")
    p.add_argument(
        "--name", default=None, help="consumer name (default: EMO_PERCEPTION_QUEUE__CONSUMER or host-pid)"
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("perceive", help="perceive one audio file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the Perception JSON")
    p.set_defaults(func=cmd_perceive)

    p = sub.add_parser("eval", help="evaluate perception over a manifest CSV")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--limit", type=_non_negative, default=None, help="first N rows with a usable label only")
    p.add_argument(
        "--no-speaker-baseline",
        action="store_true",
        help="perceive every clip alone (default: a speaker's clips are one conversation with a baseline)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="export sessions' emotional trajectories")
    p.add_argument("--session", action="append", help="session id (repeat for several)")
    p.add_argument("--all", action="store_true", help="every session in Redis")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "csv", "parquet", "emotionml"])
    p.add_argument("--out", default=None, help="file to write (stdout for text formats if omitted)")
    p.add_argument("--since", default=None, help="only turns starting at/after (Unix s or ISO 8601)")
    p.add_argument("--until", default=None, help="only turns starting at/before (Unix s or ISO 8601)")
    p.add_argument(
        "--audio-dir",
        default=None,
        help="also write each user turn's kept audio here as SESSION_TURN.wav (EMO_TRAJECTORY__KEEP_AUDIO)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="plot a session's valence/arousal over turns")
    p.add_argument("--session", required=True)
    p.add_argument("--out", required=True, help="FILE.png (or .svg/.pdf)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="HTML report of a session: plot, transcript, reasoning")
    p.add_argument("--session", required=True)
    p.add_argument("--out", required=True, help="FILE.html")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("talk", help="stream an audio file to a running server and play back the reply")
    p.add_argument("file")
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    p.add_argument("--session", default=None)
    p.add_argument("--out", default=None, help="save the reply audio as wav")
    p.add_argument("--realtime", action="store_true", help="stream at speaking pace")
    p.add_argument(
        "--token", default=None, help="the server's access token (default: $EMO_VOICE__AUTH_TOKEN)"
    )
    p.set_defaults(func=cmd_talk)

    from perception.finetune.cli import add_train_parser

    add_train_parser(sub)  # emo-agent train: fine-tune the dual-encoder AudioLLM (docs/audiollm.md)
    from dialogue.reply_training import add_train_dialogue_parser

    add_train_dialogue_parser(sub)  # emo-agent train-dialogue: the reply model (docs/dialogue.md)
    from perception.text_emotion_training import add_train_text_emotion_parser

    add_train_text_emotion_parser(sub)  # emo-agent train-text-emotion (docs/perception.md)
    return parser


def main(argv: list[str] | None = None) -> int:
    with contextlib.suppress(Exception):  # a bad setting is reported by the command itself
        memory.limit_arenas(_settings().malloc_arenas)  # before any thread allocates
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else _log_level(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    started = time.perf_counter()
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"emo-agent {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        logging.getLogger(__name__).debug("done in %.2fs", time.perf_counter() - started)


def _log_level() -> str:
    try:
        return _settings().log_level.upper()
    except Exception:
        return "INFO"


if __name__ == "__main__":
    raise SystemExit(main())
