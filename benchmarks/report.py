"""Turn ``results/raw.json`` into the markdown tables of ``docs/performance.md``.

Every number is the median over reps. Every ratio is taken per rep against the reference measured in the
same rep, then the median of those ratios is shown. The reference is raw aiohttp on the same route (``/score``
for the ``/score`` clients) and, for our own clients, with the same JSON codec as the measured package
(``aiohttp_orjson`` for the ``fast`` install, ``aiohttp`` with the stdlib for the core install; the peers are
compared with the stdlib one). A raw file without the orjson reference (runs before it existed) falls back to
the stdlib one, and the tables say so. ``±`` is half the range over reps, relative to the median.

Run alone to re-render: ``benchmarks/.venv/bin/python benchmarks/report.py [results/raw.json]``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable, Iterable
from typing import Any

import clients

Getter = Callable[[dict[str, Any]], float | None]
OURS = "azureml_chat"
PEER = "openai"
CONCURRENCY = ("1", "16", "64", "256")


def base_name(client: str) -> str:
    """The adapter behind a result name (``azureml_chat@candidate`` is ``azureml_chat`` from another path)."""
    return client.split("@", 1)[0]


def _codec(info: dict[str, Any] | None) -> str:
    return "orjson" if (info or {}).get("codec") == "orjson" else "stdlib"


def dig(*path: str) -> Getter:
    def get(result: dict[str, Any]) -> float | None:
        value: Any = result
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, (int, float)) else None

    return get


class Runs:
    """The workers' results, indexed by rep and client."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.by: dict[tuple[int, str], dict[str, Any]] = {}
        for run in raw["runs"]:
            if run.get("result"):
                self.by[(run["rep"], run["client"])] = run["result"]
        self.reps = sorted({rep for rep, _ in self.by})
        order = list(clients.ADAPTERS)
        self.clients = sorted(
            {c for _, c in self.by},
            key=lambda c: (order.index(base_name(c)) if base_name(c) in order else 99, c),
        )
        self.codecs = {"": _codec(raw.get("sdk")), "candidate": _codec(raw.get("candidate"))}

    def codec_of(self, client: str) -> str:
        """The JSON codec of the azureml_chat package a result name measured."""
        return self.codecs["candidate" if client.endswith("@candidate") else ""]

    def reference_of(self, client: str) -> str:
        """The raw-aiohttp client ``client`` is compared with: same route, and for ours the same codec (the
        stdlib reference when the run has no orjson one)."""
        name = base_name(client)
        if name not in clients.ADAPTERS:
            return clients.REFERENCE
        ref = clients.reference(name, self.codec_of(client))
        if ref not in self.clients:
            ref = clients.reference(name, "stdlib")
        return ref

    def values(self, client: str, get: Getter) -> list[float]:
        found = (get(self.by[(rep, client)]) for rep in self.reps if (rep, client) in self.by)
        return [v for v in found if v is not None]

    def median(self, client: str, get: Getter) -> float | None:
        values = self.values(client, get)
        return statistics.median(values) if values else None

    def spread(self, client: str, get: Getter) -> float | None:
        values = self.values(client, get)
        if len(values) < 2 or not statistics.median(values):
            return None
        return 100 * (max(values) - min(values)) / 2 / statistics.median(values)

    def paired(
        self, client: str, other: str, get: Getter, combine: Callable[[float, float], float]
    ) -> float | None:
        """Median over reps of ``combine(client's value, other's value)`` in the same rep."""
        pairs = []
        for rep in self.reps:
            a = self.by.get((rep, client))
            b = self.by.get((rep, other))
            va = get(a) if a else None
            vb = get(b) if b else None
            if va is not None and vb:
                pairs.append(combine(va, vb))
        return statistics.median(pairs) if pairs else None

    def ratio(self, client: str, get: Getter, other: str | None = None) -> float | None:
        return self.paired(client, other or self.reference_of(client), get, lambda a, b: a / b)

    def delta(self, client: str, get: Getter, other: str | None = None) -> float | None:
        return self.paired(client, other or self.reference_of(client), get, lambda a, b: a - b)


# --- formatting -------------------------------------------------------------------------------------


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def with_spread(runs: Runs, client: str, get: Getter, digits: int = 0) -> str:
    value = runs.median(client, get)
    spread = runs.spread(client, get)
    text = num(value, digits)
    return f"{text} ±{spread:.0f}%" if spread is not None and value is not None else text


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def table(header: Iterable[str], rows: Iterable[Iterable[str]], right_from: int = 1) -> str:
    header = list(header)
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- sections ---------------------------------------------------------------------------------------


def targets(runs: Runs, imports: dict[str, Any], subject: str = OURS) -> str:
    rows = []

    def add(metric: str, target: str, measured: str, value: float | None, ok: bool | None) -> None:
        verdict = "n/a" if ok is None else ("**met**" if ok else "**missed**")
        rows.append([metric, target, measured, ratio(value) if value is not None else "n/a", verdict])

    ref = runs.reference_of(subject)
    limit = f"raw aiohttp ({'orjson' if clients.ADAPTERS[ref].codec == 'orjson' else 'stdlib json'})"
    for c in ("64", "256"):
        get = dig("tput", c, "per_s")
        r = runs.ratio(subject, get)
        add(
            f"throughput c={c} vs {limit}",
            ">= 0.90x",
            f"{num(runs.median(subject, get))} vs {num(runs.median(ref, get))} calls/s",
            r,
            None if r is None else r >= 0.90,
        )
        r = runs.ratio(subject, get, PEER)
        add(
            f"throughput c={c} vs AsyncOpenAI",
            ">= 10x",
            f"{num(runs.median(subject, get))} vs {num(runs.median(PEER, get))} calls/s",
            r,
            None if r is None else r >= 10,
        )
    get = dig("tput", "64", "cpu_us_per_unit")
    r = runs.ratio(subject, get)
    add(
        f"client CPU per call, c=64 vs {limit}",
        "<= 1.10x",
        f"{num(runs.median(subject, get))} vs {num(runs.median(ref, get))} µs",
        r,
        None if r is None else r <= 1.10,
    )
    get = dig("seq", "p50_us")
    r = runs.ratio(subject, get)
    add(
        f"sequential p50 latency vs {limit}",
        "<= 1.10x",
        f"{num(runs.median(subject, get))} vs {num(runs.median(ref, get))} µs",
        r,
        None if r is None else r <= 1.10,
    )
    get = dig("stream", "chunks_per_s")
    r = runs.ratio(subject, get)
    add(
        f"streaming chunks/s ({_stream_tokens()} chunks) vs {limit}",
        ">= 0.90x",
        f"{num(runs.median(subject, get))} vs {num(runs.median(ref, get))} chunks/s",
        r,
        None if r is None else r >= 0.90,
    )
    get = dig("peak_rss_mib")
    d = runs.delta(subject, get)
    rows.append(
        [
            "peak RSS",
            f"<= {limit} + 10 MiB",
            f"{num(runs.median(subject, get), 1)} vs {num(runs.median(ref, get), 1)} MiB",
            "n/a" if d is None else f"{d:+.1f} MiB",
            "n/a" if d is None else ("**met**" if d <= 10 else "**missed**"),
        ]
    )
    sync, get = subject.replace(OURS, OURS + "_sync", 1), dig("tput", "64", "per_s")
    if sync in runs.clients:
        r = runs.ratio(sync, get, subject)
        add(
            "sync `Client` throughput, 64 threads, vs `AsyncChatClient` at c=64",
            ">= 0.80x",
            f"{num(runs.median(sync, get))} vs {num(runs.median(subject, get))} calls/s",
            r,
            None if r is None else r >= 0.80,
        )
    if subject != OURS:  # imports are timed for the measured source tree only
        imports = {}
    ours_ms, aio_ms = _import_median(imports, OURS), _import_median(imports, "aiohttp")
    forbidden = sorted({m for s in imports.get("samples", {}).get(OURS, []) for m in s.get("forbidden", [])})
    if ours_ms is not None and aio_ms is not None:
        d = ours_ms - aio_ms
        rows.append(
            [
                "`import azureml_chat`",
                "<= `import aiohttp` + 30 ms",
                f"{ours_ms:.1f} vs {aio_ms:.1f} ms",
                f"{d:+.1f} ms",
                "**met**" if d <= 30 else "**missed**",
            ]
        )
    rows.append(
        [
            "`import azureml_chat` loads no langchain, CLI, emulator",
            "none of: " + ", ".join(f"`{m}`" for m in _forbidden_names(imports)),
            "loaded: " + (", ".join(forbidden) if forbidden else "none"),
            "",
            "**met**"
            if not forbidden and imports.get("samples")
            else ("n/a" if not imports else "**missed**"),
        ]
    )
    return table(
        ["metric", "target", f"measured ({subject} vs reference)", "ratio", "verdict"], rows, right_from=3
    )


def _stream_tokens() -> int:
    import payloads

    return payloads.STREAM_TOKENS


def _forbidden_names(imports: dict[str, Any]) -> list[str]:
    import imports as imports_module

    return list(imports_module.FORBIDDEN)


def _import_median(imports: dict[str, Any], name: str) -> float | None:
    samples = [s["ms"] for s in imports.get("samples", {}).get(name, []) if "ms" in s]
    return statistics.median(samples) if samples else None


def sequential(runs: Runs) -> str:
    rows = []
    for c in runs.clients:
        p50 = dig("seq", "p50_us")
        ref = runs.reference_of(c)
        overhead = runs.delta(c, p50)
        rows.append(
            [
                c,
                with_spread(runs, c, p50),
                num(runs.median(c, dig("seq", "p90_us"))),
                num(runs.median(c, dig("seq", "p99_us"))),
                "n/a" if overhead is None else f"{overhead:+,.0f}",
                ratio(runs.ratio(c, p50)),
                f"vs {ref}",
            ]
        )
    return table(["client", "p50 µs", "p90 µs", "p99 µs", "p50 overhead µs", "p50 ratio", "reference"], rows)


def throughput(runs: Runs) -> str:
    rows = []
    for c in runs.clients:
        rates = [with_spread(runs, c, dig("tput", n, "per_s")) for n in CONCURRENCY]
        ratios = [ratio(runs.ratio(c, dig("tput", n, "per_s"))) for n in CONCURRENCY]
        rows.append([c, *rates, *ratios])
    header = ["client", *(f"c={n}" for n in CONCURRENCY), *(f"ratio c={n}" for n in CONCURRENCY)]
    return table(header, rows)


def cpu(runs: Runs) -> str:
    rows = []
    for c in runs.clients:
        values = [num(runs.median(c, dig("seq", "cpu_us_per_unit")))]
        values += [num(runs.median(c, dig("tput", n, "cpu_us_per_unit"))) for n in CONCURRENCY]
        ratios = [ratio(runs.ratio(c, dig("seq", "cpu_us_per_unit")))]
        ratios += [ratio(runs.ratio(c, dig("tput", n, "cpu_us_per_unit"))) for n in ("16", "64", "256")]
        rows.append([c, *values, *ratios])
    header = [
        "client",
        "seq",
        *(f"c={n}" for n in CONCURRENCY),
        "ratio seq",
        "ratio c=16",
        "ratio c=64",
        "ratio c=256",
    ]
    return table(header, rows)


def gc_table(runs: Runs) -> str:
    rows = []
    for c in runs.clients:
        cells = []
        for path in (("seq",), ("tput", "64"), ("tput", "256"), ("stream",)):
            us = runs.median(c, dig(*path, "gc_us_per_unit"))
            g0 = runs.median(c, _gc0_of(path))
            cells.append("n/a" if us is None else f"{us:.1f} ({g0:.1f})")
        rows.append([c, *cells])
    return table(["client", "seq", "c=64", "c=256", "stream (per chunk)"], rows)


def _gc0_of(path: tuple[str, ...]) -> Getter:
    return lambda result: _gc0(result, path)


def _gc0(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value["gc_per_1000"][0]) if isinstance(value, dict) else None


def streaming(runs: Runs) -> str:
    rows = []
    for c in runs.clients:
        if runs.median(c, dig("stream", "chunks_per_s")) is None:
            continue
        yielded = sorted(
            {
                n
                for rep in runs.reps
                for n in runs.by.get((rep, c), {}).get("stream", {}).get("chunks_yielded", [])
            }
        )
        rows.append(
            [
                c,
                with_spread(runs, c, dig("stream", "chunks_per_s")),
                ratio(runs.ratio(c, dig("stream", "chunks_per_s"))),
                num(runs.median(c, dig("stream", "cpu_us_per_unit")), 1),
                ratio(runs.ratio(c, dig("stream", "cpu_us_per_unit"))),
                num(runs.median(c, dig("stream", "ttfc", "p50_us"))),
                ratio(runs.ratio(c, dig("stream", "ttfc", "p50_us"))),
                num(runs.median(c, dig("stream", "stream_ms_p50")), 2),
                ", ".join(map(str, yielded)),
            ]
        )
    header = [
        "client",
        "chunks/s",
        "ratio",
        "CPU µs/chunk",
        "CPU ratio",
        "TTFC p50 µs",
        "TTFC ratio",
        "stream ms p50",
        "chunks yielded",
    ]
    return table(header, rows)


def memory_and_imports(runs: Runs, imports: dict[str, Any]) -> str:
    rows = []
    for c in runs.clients:
        peak = dig("peak_rss_mib")
        d = runs.delta(c, peak)
        rows.append(
            [
                c,
                num(runs.median(c, dig("rss_after_import_mib")), 1),
                num(runs.median(c, dig("rss_after_first_call_mib")), 1),
                with_spread(runs, c, peak, 1),
                "n/a" if d is None else f"{d:+.1f}",
                num(runs.median(c, dig("first_call_ms")), 1),
            ]
        )
    mem = table(
        [
            "client",
            "RSS after import MiB",
            "RSS after 1st call MiB",
            "peak RSS MiB",
            "peak vs reference MiB",
            "first call ms",
        ],
        rows,
    )
    rows = []
    base = _import_median(imports, "aiohttp")
    for name in imports.get("samples", {}):
        samples = imports["samples"][name]
        ms = _import_median(imports, name)
        walls = [s["wall_ms"] for s in samples if "wall_ms" in s]
        errors = [s["error"] for s in samples if "error" in s]
        spread = ""
        values = [s["ms"] for s in samples if "ms" in s]
        if len(values) > 1 and ms:
            spread = f" ±{100 * (max(values) - min(values)) / 2 / ms:.0f}%"
        rows.append(
            [
                name,
                "error: " + str(errors[0]) if errors and ms is None else f"{num(ms, 1)}{spread}",
                num(statistics.median(walls) if walls else None),
                "" if ms is None or base is None or name.startswith("(") else f"{ms - base:+.1f}",
                str(len(samples[0].get("new_modules", []))) if samples else "",
            ]
        )
    imp = table(["import", "in-process ms", "`python -c` wall ms", "vs aiohttp ms", "modules loaded"], rows)
    breakdowns = imports.get("breakdowns", [])
    extra = ""
    if breakdowns:
        names = {k for b in breakdowns for k in b}
        medians = {k: statistics.median(b.get(k, 0.0) for b in breakdowns) for k in names}
        top = sorted(medians.items(), key=lambda kv: -kv[1])[:12]
        extra = "\n\nWhat `import azureml_chat` adds after `import aiohttp` (`-X importtime` self time, median of reps):\n\n"
        extra += table(["module / package", "ms"], [[f"`{k}`", f"{v:.1f}"] for k, v in top])
    return mem + "\n\n" + imp + extra


def load(runs: Runs) -> str:
    rows = []
    for c in runs.clients:
        windows = []
        for rep in runs.reps:
            result = runs.by.get((rep, c))
            if not result:
                continue
            windows += [result[k] for k in ("seq", "stream") if k in result]
            windows += list(result.get("tput", {}).values())
        if not windows:
            continue
        tput64 = [
            runs.by[(rep, c)]["tput"]["64"]
            for rep in runs.reps
            if "64" in runs.by.get((rep, c), {}).get("tput", {})
        ]
        core = [w["foreign_client_core_pct"] for w in windows if w.get("foreign_client_core_pct") is not None]

        def med(key: str, ws: list[dict[str, Any]]) -> str:
            return num(statistics.median(w[key] for w in ws)) if ws else "n/a"

        rows.append(
            [
                c,
                med("client_cpu_pct", tput64),
                med("server_cpu_pct", tput64),
                med("foreign_cpu_pct", windows),
                num(statistics.median(core)) if core else "n/a",
                num(max(core)) if core else "n/a",
                f"{sum(1 for w in windows if w.get('attempts', 1) > 1)} of {len(windows)}",
                str(sum(runs.by.get((rep, c), {}).get("errors", 0) for rep in runs.reps)),
            ]
        )
    header = [
        "client",
        "client CPU % (c=64)",
        "server CPU % (c=64)",
        "others' CPU %, machine (median)",
        "others' CPU %, client core (median)",
        "others' CPU %, client core (max)",
        "windows re-measured",
        "errors",
    ]
    return table(header, rows)


def ceiling(raw: dict[str, Any]) -> str:
    data = raw.get("ceiling") or {}
    if not data.get("available"):
        return "`wrk` was not installed, so the ceiling was not measured (`apt-get install wrk`)."
    rows = [
        [
            case["label"],
            str(case["connections"]),
            num(case["req_per_s"]),
            num(case["p50_us"]),
            str(case["non_2xx"]),
        ]
        for case in data["cases"]
    ]
    return table(["request", "connections", "req/s", "p50 µs", "non-2xx"], rows, right_from=1)


def profile(raw: dict[str, Any]) -> str:
    parts = []
    for name, summary in (raw.get("profiles") or {}).items():
        if "error" in summary:
            parts.append(f"**{name}**: profiling failed: {summary['error']}")
            continue
        parts.append(f"**{name}** at c=64 ({summary['samples']} samples with the GIL held):\n")
        parts.append(
            table(
                ["self time, by package", "%"], [[f"{n}", f"{v}"] for n, v in summary["self_by_package"][:10]]
            )
        )
        parts.append("")
        parts.append(
            table(["self time, by function", "%"], [[f"`{n}`", f"{v}"] for n, v in summary["self"][:12]])
        )
        if summary.get("inclusive_ours"):
            parts.append("")
            parts.append(
                table(
                    ["inclusive, our functions", "%"],
                    [[f"`{n}`", f"{v}"] for n, v in summary["inclusive_ours"][:14]],
                )
            )
        parts.append("")
    return "\n".join(parts)


def versions(raw: dict[str, Any]) -> str:
    info = raw.get("machine", {})
    lines = [
        f"* Machine: {info.get('nproc')} CPUs ({info.get('cpu_model')}), {info.get('memory_gib')} GiB RAM, "
        f"{info.get('os')}, Linux {info.get('kernel')}; {info.get('implementation')} {info.get('python')}; {info.get('wrk')}.",
        f"* azureml_chat {raw.get('sdk', {}).get('version')} from `{raw.get('sdk', {}).get('path')}`"
        + f" ({raw.get('sdk', {}).get('codec', '?')} codec)"
        + (
            f"; candidate from `{raw['candidate']['path']}` ({raw['candidate'].get('codec', '?')} codec)."
            if raw.get("candidate")
            else "."
        ),
        "* " + ", ".join(f"{k} {v}" for k, v in sorted(raw.get("versions", {}).items())) + ".",
        f"* Run: {raw.get('started')}, {raw.get('reps')} reps, client order rotated each rep; "
        f"wall time {raw.get('wall_s', 0) / 60:.1f} min; command `{raw.get('command')}`.",
    ]
    return "\n".join(lines)


def describe_clients(runs: Runs) -> str:
    rows = []
    for c in runs.clients:
        what = clients.ADAPTERS[base_name(c)].describe
        if c != base_name(c):
            candidate, sdk = runs.raw.get("candidate", {}), runs.raw.get("sdk", {})
            if candidate.get("path") == sdk.get("path") and candidate.get("codec") != sdk.get("codec"):
                what = f"the same package with the {candidate.get('codec')} codec: the core install (orjson blocked)"
            else:
                what = f"the same, with the azureml_chat package from `{candidate.get('path')}`"
        rows.append([c, what, runs.reference_of(c)])
    return table(["client", "what", "ratios against"], rows, right_from=9)


def candidate_title(raw: dict[str, Any]) -> str:
    candidate, sdk = raw.get("candidate") or {}, raw.get("sdk") or {}
    if candidate.get("path") == sdk.get("path") and candidate.get("codec") != sdk.get("codec"):
        return f"core install (azureml_chat@candidate: {candidate.get('codec')} json)"
    return "candidate"


def render(raw: dict[str, Any]) -> str:
    runs = Runs(raw)
    imports = raw.get("imports") or {}
    failures = [r for r in raw["runs"] if not r.get("result")]
    sections = [
        ("Setup", versions(raw)),
        ("Clients", describe_clients(runs)),
        ("Targets", targets(runs, imports)),
        *(
            [(f"Targets, {candidate_title(raw)}", targets(runs, imports, OURS + "@candidate"))]
            if OURS + "@candidate" in runs.clients
            else []
        ),
        ("Fake endpoint ceiling (wrk, 1 thread, pinned to the client core)", ceiling(raw)),
        ("Sequential latency, non-streaming (µs per call)", sequential(runs)),
        ("Throughput, non-streaming (calls/s)", throughput(runs)),
        ("Client CPU per call (µs, process CPU time / calls)", cpu(runs)),
        ("Cyclic GC: µs per call (gen-0 collections per 1000 calls)", gc_table(runs)),
        (f"Streaming, {_stream_tokens()} chunks, one stream at a time", streaming(runs)),
        ("Memory, first call and import", memory_and_imports(runs, imports)),
        ("CPU use during the measured windows (% of one core), and errors", load(runs)),
        ("Profiles (py-spy, c=64)", profile(raw)),
    ]
    if failures:
        sections.append(
            (
                "Failed workers",
                "\n".join(f"* rep {f['rep']} {f['client']}: {f.get('error', '?')}" for f in failures),
            )
        )
    return "\n\n".join(f"### {title}\n\n{body}" for title, body in sections) + "\n"


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results", "raw.json")
    with open(path) as f:
        print(render(json.load(f)))


if __name__ == "__main__":
    main()
