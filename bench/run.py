"""Orchestrates one benchmark run: ``python -m bench [--quick] [--out bench/RESULTS.md]``."""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from resolver.core.decide import Resolver
from resolver.registry.documents import load_jurisdictions
from resolver.store import Store

from . import (
    axfr,
    dnscold,
    httpbench,
    inproc,
    postgis,
    profiling,
    report,
    scale,
    serve_start,
    synthetic,
    webcost,
    workloads,
)
from .common import COUNTIES, REPO, build_store, machine, random_points

#: Targets: (figure, comparison, threshold). HTTP ratios are the lowest over concurrencies of the
#: median over paired rounds; in-process ones are judged on each workload (bench/workloads.py).
TARGETS = {
    "single_p50_ratio": ("ours/raw STRtree p50, single resolve, uniform points", "<=", 1.5),
    "single_p50_border_ratio": (
        "ours/raw STRtree p50, single resolve, near-border points",
        "<=",
        1.0,
    ),
    "batch_ratio": ("resolve_many (answers iterated) / raw STRtree, uniform points", ">=", 0.8),
    "batch_mix_ratio": (
        "resolve_many (answers iterated) / raw STRtree, real-report mix",
        ">=",
        1.0,
    ),
    "batch_covers_ratio": ("covering_many alone / raw STRtree, points/s", ">=", 0.8),
    "http_ratio": (
        "/service rps / trivial handler rps, same access log, 1 worker each (lowest over "
        "concurrencies of the median of paired rounds)",
        ">=",
        0.8,
    ),
    "postgis_aiohttp_ratio": (
        "/service rps / PostGIS-behind-aiohttp rps (lowest over concurrencies, median of "
        "paired rounds)",
        ">=",
        3.0,
    ),
    "workers_ratio": (
        "/service rps, 2 workers / 1 worker (lowest over concurrencies 8 and up, median of "
        "paired rounds; the load generator shares the 2 cores)",
        ">=",
        1.5,
    ),
    "serve_first_200_s": (
        "`geoweb serve` counties: exec to first 200, median of the starts from the index snapshot",
        "<",
        1.0,
    ),
    "startup_s": ("store load + Resolver build, seconds", "<", 1.0),
    "synthetic_startup_s": ("synthetic registry: store load + Resolver build, seconds", "<", 30.0),
    "synthetic_rss_mib": ("synthetic registry: peak RSS at start-up, MiB", "<", 2048.0),
    "postgis_single_ratio": (
        "in-process single resolves/s over PostGIS per-point queries/s",
        ">=",
        10.0,
    ),
    "postgis_batch_ratio": (
        "in-process batch points/s over PostGIS set-based points/s",
        ">=",
        10.0,
    ),
    "synthetic_batch_ratio": (
        "synthetic registry: resolve_many (answers iterated) / raw STRtree",
        ">=",
        0.8,
    ),
    "scale_first_200_s": (
        "large registry (--scale-db): `geoweb serve` exec to first 200, from the snapshot, s",
        "<",
        20.0,
    ),
    "scale_rss_mib": ("large registry: `geoweb serve` RSS once answering, MiB", "<", 3072.0),
    "scale_grid_uniform": (
        "large registry: share of uniform points answered by the grid (lookup, or lookup and "
        "side-of-line tests; lookup alone in section 13)",
        ">=",
        0.85,
    ),
    "scale_batch_mix_ratio": (
        "large registry: resolve_many (answers iterated) / raw STRtree, real-report mix",
        ">=",
        1.0,
    ),
}

FULL = {
    "single_points": 20_000,
    "batch_points": 100_000,
    "batch_repeats": 3,
    "csv_points": 100_000,
    "startup_runs": 3,
    "http_duration": 2.0,
    "http_max_requests": 200_000,
    "http_points": 5_000,
    "http_rounds": 3,
    "webcost_rounds": 3,
    "webcost_requests": 20_000,
    "concurrencies": (1, 8, 32),
    "workload_points": 100_000,
    "workload_single_points": 10_000,
    "serve_start_runs": 3,
    "synthetic_jurisdictions": 100_000,
    "postgis_single_points": 10_000,
    "dns_cold_points": 300,
    "axfr_runs": 10,
    "dns_shared_points": 1_000,
}
QUICK = {
    "single_points": 2_000,
    "batch_points": 20_000,
    "batch_repeats": 1,
    "csv_points": 10_000,
    "startup_runs": 1,
    "http_duration": 0.8,
    "http_max_requests": 20_000,
    "http_points": 1_000,
    "http_rounds": 1,
    "webcost_rounds": 1,
    "webcost_requests": 2_000,
    "concurrencies": (1, 8, 32),
    "workload_points": 20_000,
    "workload_single_points": 2_000,
    "serve_start_runs": 1,
    "synthetic_jurisdictions": 10_000,
    "postgis_single_points": 1_000,
    "dns_cold_points": 30,
    "axfr_runs": 3,
    "dns_shared_points": 200,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def startup(db: Path, runs: int) -> dict[str, Any]:
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-m", "bench.startup_probe", str(db)],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=120,
        )
        samples.append(json.loads(done.stdout))
    keys = [k for k, v in samples[0].items() if isinstance(v, float)]
    out: dict[str, Any] = {k: statistics.median(s[k] for s in samples) for k in keys}
    out.update(
        runs=runs,
        jurisdictions=samples[0]["jurisdictions"],
        pieces=samples[0]["pieces"],
        grid=samples[0]["grid"],
        source=samples[0]["source"],
        samples=samples,
    )
    return out


def resolve_batch_cli(db: Path, workdir: Path, n: int, seed: int) -> dict[str, Any]:
    lats, longs = random_points(n, seed)
    source = workdir / "points.csv"
    target = workdir / "answers.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["lat", "long"])
        writer.writerows(zip(np.round(lats, 6).tolist(), np.round(longs, 6).tolist(), strict=True))
    command = [sys.executable, "-m", "resolver", "resolve-batch", str(source), str(target)]
    command += ["--db", str(db)]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, timeout=600, capture_output=True)
    seconds = time.perf_counter() - start
    with target.open(encoding="utf-8") as f:
        rows = sum(1 for _ in f) - 1
    return {
        "points": n,
        "rows_out": rows,
        "seconds": seconds,
        "points_per_s": n / seconds,
        "includes": "process start, imports, store load, Resolver build, CSV read and write",
    }


def evaluate(results: dict[str, Any]) -> dict[str, Any]:
    figures = {
        "single_p50_ratio": results["single"]["ratio_p50_ours_raw"],
        "batch_ratio": results["batch"]["ratio_iterated_raw"],
        "batch_covers_ratio": results["batch"]["ratio_covers_raw"],
        "single_p50_border_ratio": results["workloads"]["near_border"]["single_p50_ratio"],
        "batch_mix_ratio": results["workloads"]["mix"]["batch_ratio"],
        "http_ratio": min(r["median"] for r in results["peers"]["ratios"]["trivial"].values()),
        # one connection keeps one worker busy at a time: judged where there are more
        "workers_ratio": min(
            r["median"] for c, r in results["peers"]["ratios"]["workers"].items() if int(c) > 1
        ),
        "serve_first_200_s": results["serve_start"]["1"]["median_s"],
        "startup_s": results["startup"]["load_build_s"],
        "synthetic_startup_s": results["synthetic"]["startup"]["load_build_s"],
        "synthetic_rss_mib": results["synthetic"]["startup"]["peak_rss_mib"],
        "synthetic_batch_ratio": results["synthetic"]["batch"]["ratio_iterated_raw"],
    }
    pg = results["postgis"]
    if "skipped" not in pg:
        figures["postgis_single_ratio"] = (
            results["single"]["ours"]["per_s"] / pg["per_point"]["points_per_s"]
        )
        figures["postgis_batch_ratio"] = (
            results["batch"]["resolve_many_iterated"]["points_per_s"]
            / pg["set_based"]["points_per_s"]
        )
    if "postgis" in results["peers"]["ratios"]:
        figures["postgis_aiohttp_ratio"] = min(
            r["median"] for r in results["peers"]["ratios"]["postgis"].values()
        )
    large = results.get("scale")
    if large is not None:
        figures["scale_first_200_s"] = large["serve"]["median_s"]
        figures["scale_rss_mib"] = large["serve"]["rss_mib"]
        figures["scale_grid_uniform"] = large["uniform"]["grid_fraction"]
        figures["scale_batch_mix_ratio"] = large["mix"]["batch_ratio"]
    out = {}
    for key, (label, op, threshold) in TARGETS.items():
        if key not in figures:
            continue  # a baseline that could not run here (said in the report)
        value = figures[key]
        met = _holds(value, op, threshold)
        out[key] = {"label": label, "value": value, "op": op, "target": threshold, "met": met}
    return out


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository (no machine's paths)."""
    resolved = path.resolve()
    if resolved.is_relative_to(REPO):
        return str(resolved.relative_to(REPO))
    if resolved.is_relative_to(REPO.parent):
        return "../" + str(resolved.relative_to(REPO.parent))
    return path.name


def peers(
    db: Path,
    workdir: Path,
    http_points: tuple[list[float], list[float]],
    ids: list[str],
    geometries: list[Any],
    plan: dict[str, Any],
    with_postgis: bool,
) -> dict[str, Any]:
    """`/service` beside the trivial handler (access log on and off), with 2 workers, and
    PostGIS behind a minimal aiohttp handler (a pool of 32 connections)."""
    files = httpbench.write_paths(workdir, *http_points)
    serve = httpbench.geoweb_serve_args(db, 0)
    serve = [a if a != "0" else "{port}" for a in serve]
    trivial = ["-m", "bench.trivial_server", "--host", httpbench.HOST, "--port", "{port}"]
    servers = {
        "service": serve,
        "service_no_log": [*serve, "--no-access-log"],
        "service_2_workers": [*serve, "--workers", "2"],
        "trivial": trivial,
        "trivial_no_log": [*trivial, "--no-access-log"],
    }
    paths = dict.fromkeys(servers, files["service"])
    with contextlib.ExitStack() as stack:
        if with_postgis:
            conninfo = stack.enter_context(postgis.cluster())
            postgis.load(conninfo, ids, geometries)
            servers["postgis"] = ["-m", "bench.postgis_http", "--conninfo", conninfo]
            servers["postgis"] += ["--port", "{port}", "--pool", "32"]
            paths["postgis"] = files["service"]
        out = httpbench.run_peers(
            servers,
            paths,
            plan["concurrencies"],
            plan["http_duration"],
            plan["http_max_requests"],
            plan["http_rounds"],
            workdir,
        )
    out["ratios"] = {
        "trivial": httpbench.paired_ratios(out, "service", "trivial"),
        "trivial_no_log": httpbench.paired_ratios(out, "service_no_log", "trivial_no_log"),
        "access_log": httpbench.paired_ratios(out, "service", "service_no_log"),
        "workers": httpbench.paired_ratios(out, "service_2_workers", "service"),
    }
    if with_postgis:
        out["ratios"]["postgis"] = httpbench.paired_ratios(out, "service", "postgis")
        # The database side runs in processes of its own, so a server with a worker per core is
        # the like-for-like peer; a constant handler's ratio bounds what any aiohttp handler gets.
        out["ratios"]["postgis_2_workers"] = httpbench.paired_ratios(
            out, "service_2_workers", "postgis"
        )
        out["ratios"]["postgis_trivial"] = httpbench.paired_ratios(out, "trivial", "postgis")
    return out


def profiles(
    targets: dict[str, Any],
    resolver: Resolver,
    db: Path,
    workdir: Path,
    single_points: tuple[np.ndarray, np.ndarray],
    batch_points: tuple[np.ndarray, np.ndarray],
    http_points: tuple[list[float], list[float]],
    http_duration: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not targets["single_p50_ratio"]["met"]:
        lats, longs = (a.tolist() for a in single_points)

        def singles() -> None:
            for lat, long in zip(lats, longs, strict=True):
                resolver.resolve(lat, long)

        log("profiling single resolves")
        out["single"] = profiling.profile_call(singles)
    if not (targets["batch_ratio"]["met"] and targets["batch_covers_ratio"]["met"]):

        def batch() -> None:
            for _answer in resolver.resolve_many(*batch_points):
                pass

        log("profiling resolve_many with iteration")
        out["batch"] = profiling.profile_call(batch)
    http_targets = ("http_ratio", "postgis_aiohttp_ratio")
    if not all(targets[key]["met"] for key in http_targets if key in targets):
        log("profiling geoweb serve under /service load (concurrency 8)")
        prof = httpbench.profile_service(db, workdir, *http_points, max(http_duration, 2.0))
        # A profile that was not written costs its section, never the figures of the whole run.
        if prof.exists():
            out["http_service"] = profiling.profile_file(prof)
        else:
            log(f"the profiled server wrote no profile (see {prof.parent.name}/profserve.log)")
    if not targets["startup_s"]["met"]:

        def start() -> None:
            with Store(db) as store:
                jurisdictions, _ = load_jurisdictions(store)
            Resolver(jurisdictions)

        log("profiling store load and Resolver build")
        out["startup"] = profiling.profile_call(start)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 1 minute)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "out",
        help="folder for RESULTS.md and results.json [bench/out, not committed]",
    )
    parser.add_argument(
        "--update-results",
        action="store_true",
        help="write the committed bench/RESULTS.md and bench/results.json instead",
    )
    parser.add_argument(
        "--data", type=Path, default=COUNTIES, help="the US counties GeoJSON [../shared/data]"
    )
    parser.add_argument(
        "--scale-db",
        type=Path,
        help="a large store (python -m bench.scale DB --build) to judge the 1 M targets on",
    )
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--no-profile", action="store_true", help="skip profiling missed targets")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="whole runs, one after another: each target's min/median/max over them, judged "
        "on the median; the sections show the last run [1]",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    folder = REPO / "bench" if args.update_results else args.out
    folder.mkdir(parents=True, exist_ok=True)
    md_path, json_path = folder / "RESULTS.md", folder / "results.json"
    given = sys.argv[1:] if argv is None else argv
    # paths as the report shows them: no machine's absolute paths in a committed file
    shown = [_shown(Path(a)) if a.startswith("/") else a for a in given]
    started = time.perf_counter()
    runs = []
    for number in range(1, args.runs + 1):
        if args.runs > 1:
            log(f"run {number} of {args.runs}")
        # Profiles explain the misses of the run the sections show: the last.
        runs.append(measure(args, profile=number == args.runs and not args.no_profile))
    results = runs[-1]
    results["command"] = shlex.join(["python", "-m", "bench", *shown])
    results["json_file"] = _shown(json_path)
    if args.runs > 1:
        results["runs"] = [
            {
                "targets": run["targets"],
                "elapsed_s": run["elapsed_s"],
                "load_average_start": run["load_average_start"],
                "load_average_end": run["load_average_end"],
            }
            for run in runs
        ]
        results["over_runs"] = over_runs([run["targets"] for run in runs])
        results["load_average_start"] = runs[0]["load_average_start"]
    results["elapsed_s"] = time.perf_counter() - started
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(report.markdown(results), encoding="utf-8")
    log(f"done in {results['elapsed_s']:.0f} s: wrote {md_path} and {json_path}")
    for key, target in results.get("over_runs", results["targets"]).items():
        state = "met" if target["met"] else "MISSED"
        log(f"  {key}: {target['value']:.3g} ({target['op']} {target['target']}) {state}")


def over_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each target's figures over whole runs: min, median, max, in how many runs it was met,
    and the verdict on the median (a target a run could not measure, a baseline missing
    there, is judged on the runs that have it)."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for targets in runs for k in targets):
        seen = [targets[key] for targets in runs if key in targets]
        values = [t["value"] for t in seen]
        first = seen[0]
        median = statistics.median(values)
        out[key] = {
            **{k: first[k] for k in ("label", "op", "target")},
            "value": median,
            "min": min(values),
            "max": max(values),
            "runs": len(values),
            "met_runs": sum(t["met"] for t in seen),
            "met": _holds(median, first["op"], first["target"]),
        }
    return out


def _holds(value: float, op: str, threshold: float) -> bool:
    return {
        "<=": value <= threshold,
        ">=": value >= threshold,
        "<": value < threshold,
        ">": value > threshold,
    }[op]


def measure(args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    """One whole run: every section, its targets, and (``profile``) profiles of the missed."""
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()},
        "seed": args.seed,
        "machine": machine(),
        "load_average_start": os.getloadavg(),
        "data_file": _shown(args.data),
    }
    with tempfile.TemporaryDirectory(prefix="geoweb-bench-") as tmp:
        workdir = Path(tmp)
        log("importing the US counties into a fresh store (geoweb import)")
        db, import_s = build_store(workdir, args.data)
        results["store"] = {"import_s": import_s, "bytes": db.stat().st_size}

        log("start-up: store load + Resolver build in fresh processes")
        results["startup"] = startup(db, plan["startup_runs"])

        with Store(db) as store:
            jurisdictions, _ = load_jurisdictions(store)
        resolver = Resolver(jurisdictions)
        geometries = [j.boundary for j in jurisdictions if j.boundary is not None]
        tree = shapely.STRtree(geometries)
        grid = resolver.index.grid
        results["data"] = {
            "jurisdictions": len(jurisdictions),
            "with_boundary": len(geometries),
            "index_pieces": resolver.index.pieces,
            "grid": dataclasses.asdict(grid) if grid is not None else None,
        }

        single_points = random_points(plan["single_points"], args.seed)
        log(f"single resolves over {plan['single_points']} points")
        results["single"] = inproc.single(resolver, tree, *single_points)

        batch_points = random_points(plan["batch_points"], args.seed + 1)
        log(f"batch over {plan['batch_points']} points")
        results["batch"] = inproc.batch(resolver, tree, *batch_points, plan["batch_repeats"])

        log(f"workloads: uniform, near-border, clustered, mix ({plan['workload_points']} points)")
        results["workloads"] = workloads.run(
            resolver,
            tree,
            plan["workload_points"],
            plan["workload_single_points"],
            plan["batch_repeats"],
            args.seed,
        )

        log("geoweb serve on the counties: exec to first 200 on /healthz, 1 and 2 workers")
        results["serve_start"] = {
            str(w): serve_start.run(db, w, plan["serve_start_runs"]) for w in (1, 2)
        }

        # HTTP points: random points that some county covers, so every answer is a real one.
        lats, longs = random_points(plan["http_points"] * 3, args.seed + 3)
        answers = resolver.resolve_many(lats, longs)
        keep = [i for i, a in enumerate(answers) if getattr(a, "found", False)]
        keep = keep[: plan["http_points"]]
        http_points = ([float(lats[i]) for i in keep], [float(longs[i]) for i in keep])

        log("PostGIS baseline: a throwaway PostgreSQL + PostGIS cluster on 127.0.0.1")
        ids = [j.id for j in jurisdictions if j.boundary is not None]
        first = plan["postgis_single_points"]
        results["postgis"] = postgis.run(
            ids,
            geometries,
            (single_points[0][:first], single_points[1][:first]),
            batch_points,
            (http_points[0][:first], http_points[1][:first]),
        )

        log(f"geoweb resolve-batch on a CSV of {plan['csv_points']} points")
        results["resolve_batch_cli"] = resolve_batch_cli(
            db, workdir, plan["csv_points"], args.seed + 2
        )

        log("HTTP: geoweb serve and the trivial server, loaded from another process")
        results["http"] = httpbench.run(
            db,
            workdir,
            *http_points,
            plan["concurrencies"],
            plan["http_duration"],
            plan["http_max_requests"],
            plan["http_rounds"],
        )
        results["http"]["points"] = len(keep)

        log("HTTP peers: access log on/off, 2 workers, PostGIS behind aiohttp")
        results["peers"] = peers(
            db, workdir, http_points, ids, geometries, plan, postgis.available() is None
        )

        log("the request path in process: server CPU per request, part by part")
        points_file = workdir / "webcost-points.json"
        points_file.write_text(json.dumps(http_points))
        results["webcost"] = webcost.inproc(
            str(db), str(points_file), plan["webcost_rounds"], plan["webcost_requests"]
        )

        log(
            f"cold resolve through DNS: Knot on loopback, {plan['dns_cold_points']} cold "
            f"lookups, {plan['dns_shared_points']} with a shared cache"
        )
        results["dns"] = dnscold.run(
            db, workdir, plan["dns_cold_points"], plan["dns_shared_points"], args.seed + 20
        )

        log("AXFR of the counties zone from a default-config Knot: ours, dnspython, kdig")
        results["axfr"] = axfr.run(db, workdir, plan["axfr_runs"])

        n = plan["synthetic_jurisdictions"]
        log(f"synthetic registry: {n:,} Voronoi jurisdictions (store, start-up, batch)")
        synthetic_db = workdir / "synthetic.sqlite"
        start = time.perf_counter()
        synthetic.build_store(synthetic_db, n, args.seed + 10)
        results["synthetic"] = {
            "jurisdictions": n,
            "store_build_s": time.perf_counter() - start,
            "startup": startup(synthetic_db, 1),
        }
        with Store(synthetic_db) as store:
            synthetic_jurisdictions, _ = load_jurisdictions(store)
        synthetic_resolver = Resolver(synthetic_jurisdictions)
        synthetic_tree = shapely.STRtree([j.boundary for j in synthetic_jurisdictions])
        results["synthetic"]["batch"] = inproc.batch(
            synthetic_resolver, synthetic_tree, *batch_points, plan["batch_repeats"]
        )
        del synthetic_resolver, synthetic_tree, synthetic_jurisdictions

        if args.scale_db is not None:
            log(f"large registry: {_shown(args.scale_db)} (serve start, load, build, workloads)")
            results["scale"] = scale.measure(args.scale_db, plan["batch_points"], args.seed)

        results["targets"] = evaluate(results)
        results["profiles"] = (
            {}
            if not profile
            else profiles(
                results["targets"],
                resolver,
                db,
                workdir,
                single_points,
                batch_points,
                http_points,
                plan["http_duration"],
            )
        )
    results["elapsed_s"] = time.perf_counter() - started
    results["load_average_end"] = os.getloadavg()
    return results
