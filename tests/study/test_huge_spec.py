"""A huge spec is refused cheaply, before it costs time or memory (issue 28, item 6).

Refusals come in order of cost: a file over 64 KiB before YAML reads it (study.spec.loader.MAX_SPEC_BYTES), a
document that YAML aliases expand past 100,000 values before pydantic walks it (MAX_SPEC_VALUES), and a grid over
`max_trials` counted arithmetically, never expanded (study.spec.plan.summary). Each test runs `taugate` in this
process and measures what the refusal allocates (tracemalloc's peak, and the growth of the process's peak RSS),
after a first call has imported everything a refusal needs.

Benchmark note (in process, after the imports; 2 cores shared with a CI run; not asserted): `taugate run` of the
10.6 MB spec listing 1,300,000 seeds was refused at max_trials after 460 s and 2.8 GB of peak RSS growth before
these checks (the issue measured 59 s and 3.4 GB on a quieter machine); now it is refused at the size limit in
0.12 s with no peak RSS growth (0.5 MiB at tracemalloc's peak). The 100-million-trial grid of a few hundred bytes
is refused at max_trials in 0.13 s (listing it would need tens of GB).
"""

from __future__ import annotations

import resource
import time
import tracemalloc
from pathlib import Path

import pytest

from study.folder.metadata import prepare
from study.spec.loader import MAX_SPEC_BYTES, MAX_SPEC_VALUES, SpecError, load_spec
from tests.support.cli import taugate

SEEDS = 1_300_000
MEMORY_BOUND = 500 * 2**20  # bytes: generous (the refusals measured allocate under 1 MB; before: 2.8 GB)


def write_seeds_spec(path: Path, seeds: int) -> int:
    """A spec listing `seeds` seeds (written in chunks, never held whole); its size in bytes."""
    with path.open("w") as out:
        out.write("name: huge\nmethods: {frozen: {}}\nseeds: [0")
        for start in range(1, seeds, 100_000):
            out.write("".join(f", {seed}" for seed in range(start, min(start + 100_000, seeds))))
        out.write("]\n")
    return path.stat().st_size


def refused_cheaply(*args: str) -> tuple[object, float, int, int]:
    """`taugate ARGS` in process: the result, seconds, tracemalloc's peak and the peak RSS's growth (bytes)."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        started = time.perf_counter()
        result = taugate(*args, local=True)  # refused before any Ray: none is started
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return result, seconds, peak, growth


@pytest.fixture(scope="module", autouse=True)
def imported(tmp_path_factory):
    """One refused `taugate run` first, so that the measured calls count no module imports."""
    spec = tmp_path_factory.mktemp("warm") / "bad.yaml"
    spec.write_text("name: warm\nmax_trials: 1\nseeds: [0, 1]\nmethods: {frozen: {}}\n")
    assert taugate("run", str(spec), "--output", str(spec.parent / "study"), local=True).returncode == 2


def test_a_spec_listing_a_million_seeds_is_refused_before_it_is_parsed(tmp_path):
    spec = tmp_path / "huge.yaml"
    size = write_seeds_spec(spec, SEEDS)
    assert size > 9_000_000  # the reported spec: 9 MB (this one writes each seed with a space: 10.6 MB)
    result, seconds, peak, growth = refused_cheaply("run", str(spec), "--output", str(tmp_path / "study"))
    print(f"\nrefused {size:,} bytes in {seconds:.3f} s; tracemalloc peak {peak / 2**20:.2f} MiB, "
          f"peak RSS growth {growth / 2**20:.1f} MiB")  # fmt: skip
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert f"{spec}: {size:,} bytes; a spec holds at most 65,536 bytes (64 KiB)" in message
    assert peak < MEMORY_BOUND and growth < MEMORY_BOUND
    assert not (tmp_path / "study").exists()


def test_a_grid_of_a_hundred_million_trials_is_counted_not_expanded(tmp_path):
    """100 seeds x 100 s x 100 lambda x 100 tau multipliers: a few hundred bytes, 10^8 trials. `run` refuses it
    at max_trials without --yes; `plan --json` warns and prints the count; neither lists the trials."""
    axis = "[" + ", ".join(str(v) for v in range(1, 101)) + "]"
    spec = tmp_path / "grid.yaml"
    spec.write_text(f"name: grid\nseeds: {axis}\nmethods:\n  taugate: {{gate_sharpness: {axis}, "
                    f"sparsity_weight: {axis}, tau_lr_multiplier: {axis}}}\n")  # fmt: skip
    result, seconds, peak, growth = refused_cheaply("run", str(spec), "--output", str(tmp_path / "study"))
    print(f"\nrun refused 10^8 trials in {seconds:.3f} s; tracemalloc peak {peak / 2**20:.2f} MiB")
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "max_trials: the study has 100000000 trials, more than max_trials=2000; pass --yes" in message
    assert peak < MEMORY_BOUND and growth < MEMORY_BOUND
    assert not (tmp_path / "study").exists()

    result, seconds, peak, growth = refused_cheaply("plan", str(spec), "--json")
    print(f"plan --json counted 10^8 trials in {seconds:.3f} s; tracemalloc peak {peak / 2**20:.2f} MiB")
    assert result.returncode == 0, result.stderr
    assert '"trials": 100000000' in result.stdout and '"foundations": 100' in result.stdout
    assert "warning: 100000000 trials, more than max_trials=2000" in " ".join(result.stderr.split())
    assert peak < MEMORY_BOUND and growth < MEMORY_BOUND


def test_yaml_aliases_that_nest_into_millions_of_values_are_refused_before_validation(tmp_path):
    """Three levels of a hundred aliases: 10^6 nested grids under `also` from 1.5 KB. Before the count, pydantic
    validated each before refusing the nesting: 12.9 s and about 0.8 GB (measured as the note above)."""
    level1, level2, level3 = ("[" + ", ".join([grid] * 100) + "]" for grid in ("{}", "{also: *l1}", "{also: *l2}"))
    spec = tmp_path / "aliases.yaml"
    spec.write_text(f"name: aliases\nmethods:\n  taugate: {{also: &l1 {level1}}}\n"
                    f"  gain_only: {{also: &l2 {level2}}}\n  threshold_only: {{also: {level3}}}\n")  # fmt: skip
    assert spec.stat().st_size < MAX_SPEC_BYTES
    result, seconds, peak, growth = refused_cheaply("run", str(spec), "--output", str(tmp_path / "study"))
    print(f"\nrefused the aliases in {seconds:.3f} s; tracemalloc peak {peak / 2**20:.2f} MiB")
    assert result.returncode == 2, result.stderr
    assert f"more than {MAX_SPEC_VALUES:,} values once its YAML aliases are expanded" in " ".join(result.stderr.split())
    assert peak < MEMORY_BOUND and growth < MEMORY_BOUND


def test_a_large_but_sane_grid_runs_with_yes(tmp_path):
    """3,000 trials (30 seeds x 10 s x 10 lambda) over max_trials 2,000: refused without --yes, prepared with it
    (`taugate run --yes` calls `prepare(..., yes=True)` before it starts Ray), counted exactly."""
    axis = "[" + ", ".join(str(v) for v in range(1, 11)) + "]"
    path = tmp_path / "sane.yaml"
    path.write_text(f"name: sane\nseeds: [{', '.join(str(s) for s in range(30))}]\n"
                    f"methods: {{taugate: {{gate_sharpness: {axis}, sparsity_weight: {axis}}}}}\n")  # fmt: skip
    spec = load_spec(path)
    with pytest.raises(SpecError, match="the study has 3000 trials, more than max_trials=2000"):
        prepare(spec, tmp_path / "refused")
    study = prepare(spec, tmp_path / "study", yes=True)
    assert (study["trials_planned"], study["foundations_planned"]) == (3000, 30)
    assert (tmp_path / "study" / "study.json").is_file()
