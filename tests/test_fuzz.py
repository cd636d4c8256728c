"""Bad input everywhere: random block strings, arch JSON, latency tables and command lines raise the
project's own errors (or exit 2 from argparse), never anything else."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from latency.table import FORMAT, LatencyTable  # noqa: E402
from nas.core.errors import ArchError, LatencyError  # noqa: E402
from search_spaces.catalog import SPACES, get_space  # noqa: E402

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JUNK = ["", "|", "||", ":", "(", ")", "+", "-", ".", ",", "0", "-1", "1e309", "nan", "NaN", "inf", "k0e0", "k3e3e3",
        "skip", "id", "None", "\x00", "ｋ3e3", "é", "9" * 5000, "h0m0", "d-1", "w", "(99)", "normal:", "reduce:",
        "s1:", "s9:", "{}", "[]"]


def space_tokens(name: str) -> list[str]:
    """Tokens of real block strings of the space, and their pieces split at punctuation."""
    space = get_space(name)
    rng = np.random.default_rng(0)
    out: set[str] = set()
    for _ in range(10):
        text = space.format(space.sample(rng))
        out.update(text.split())
        out.update(p for p in re.split(r"[\s()+:|]+", text) if p)
    return sorted(out)


def token_soup(name: str) -> st.SearchStrategy[str]:
    tokens = st.sampled_from(space_tokens(name) + JUNK)
    seps = st.sampled_from([" ", " ", " | ", "|", " || ", ": ", "\t", "\n", "+", "(", ")", ""])
    return st.lists(st.tuples(tokens, seps), max_size=60).map(lambda xs: "".join(a + b for a, b in xs))


def mutated(name: str) -> st.SearchStrategy[str]:
    """A real block string with a few tokens deleted, replaced or duplicated."""
    space = get_space(name)

    @st.composite
    def build(draw: Any) -> str:
        arch = space.sample(np.random.default_rng(draw(st.integers(0, 2**16))))
        parts = re.split(r"(\s+)", space.format(arch))
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(parts) - 1))
            op = draw(st.sampled_from(["del", "swap", "dup"]))
            if op == "del":
                parts.pop(i)
            elif op == "dup":
                parts.insert(i, parts[i])
            else:
                parts[i] = draw(st.sampled_from(space_tokens(name) + JUNK))
            if not parts:
                break
        return "".join(parts)
    return build()


def check_parse(name: str, text: str) -> None:
    space = get_space(name)
    try:
        arch = space.parse(text)
    except ArchError:
        return
    assert space.parse(space.format(arch)) == arch   # whatever parses is a valid, round-tripping arch


@pytest.mark.parametrize("name", SPACES.names())
def test_block_string_token_soup(name: str) -> None:
    @FAST
    @given(st.one_of(token_soup(name), mutated(name), st.text(max_size=80)))
    def run(text: str) -> None:
        check_parse(name, text)
    run()


@pytest.mark.parametrize("name", SPACES.names())
def test_every_number_of_a_block_string_may_be_huge_or_not_ascii(name: str) -> None:
    """Each digit run of a real block string replaced by 5,000 digits (int() refuses over 4,300) or by a
    non-ASCII digit ('٣', which str.isdigit accepts): a bad-arch error or a valid arch, never ValueError."""
    space = get_space(name)
    text = space.format(space.sample(np.random.default_rng(1)))
    for repl in ("7" * 5000, "\u0663"):
        check_parse(name, f"{repl} {text}")                # a number where a token is expected (hytra has none)
        for m in list(re.finditer(r"[0-9]+", text))[:40]:
            check_parse(name, text[:m.start()] + repl + text[m.end():])


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                           max_leaves=30)


@pytest.mark.parametrize("name", SPACES.names())
def test_arch_json(name: str) -> None:
    space = get_space(name)
    genes = [d.choices for d in space.decisions]

    @st.composite
    def near_valid(draw: Any) -> Any:
        """Genes mostly from the right choices, some replaced or dropped, some junk."""
        out: list[Any] = [draw(st.sampled_from(list(c))) for c in genes]
        for _ in range(draw(st.integers(0, 3))):
            if out:
                out[draw(st.integers(0, len(out) - 1))] = draw(json_values)
        if draw(st.booleans()):
            out = out[:draw(st.integers(0, len(out)))]
        return {"space": draw(st.sampled_from([name, "mbconv", "", "x"])), "genes": out}

    @FAST
    @given(st.one_of(near_valid(), json_values, st.dictionaries(st.sampled_from(["space", "genes", "x"]), json_values)))
    def run(doc: Any) -> None:
        try:
            arch = space.arch_from_json(json.dumps(doc))
        except ArchError:
            return
        assert space.validate(arch) == arch and space.parse(space.format(arch)) == arch
    run()

    @FAST
    @given(st.text(max_size=60))
    def run_text(text: str) -> None:
        try:
            space.parse_any(text)
        except ArchError:
            pass
    run_text()


@FAST
@given(st.fixed_dictionaries({}, optional={
    "format": st.sampled_from([FORMAT, FORMAT, "x", None, 1]),
    "space": st.one_of(st.just("mbconv"), json_values),
    "space_options": st.one_of(st.just({}), json_values),
    "metadata": st.one_of(st.just({"device": "d"}), json_values),
    "entries": st.one_of(
        st.dictionaries(st.text(max_size=10), st.one_of(
            st.fixed_dictionaries({"ms": st.one_of(st.floats(), st.integers(), st.just(10**400), json_values)},
                                  optional={"iqr_ms": st.one_of(json_values, st.just(-10**400)), "n": json_values}),
            json_values), max_size=5),
        json_values)}) | json_values)
def test_latency_table_from_dict(doc: Any) -> None:
    try:
        table = LatencyTable.from_dict(doc)
    except LatencyError:
        return
    assert all(math.isfinite(e["ms"]) and e["ms"] >= 0 for e in table.entries.values())
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))).entries == table.entries


# ---- command lines --------------------------------------------------------------------------------
# Per command: its flags and the values to try (valid ones, near misses and junk); None = a switch.
# Values are kept cheap: searches run at most 2 trials, no Ray, no training evaluator, no profiling.
SPACE_NAMES = ["mbconv", "nasnet", "hytra", "vit_resnas", "nope", ""]
OPTS = ["width_mult=0.25", "resolution=32", "num_classes=10", "resolution=abc", "kernels=[2]", "kernels=[]",
        "width_mult=null", "x=", "=1", "k", "width_mult=1e309"]
TARGETS = ["cpu", "pixel1", "nope", "TABLE", "missing.json", "done/config.json", ""]
ARCHS = ["single-path-nas", "k3e3 | k9e9", "{", '{"space": "mbconv", "genes": []}', "", "é", "TINY_ARCH"]
PATHS = ["run", "done", "done/best.json", "missing.json", ".", "", "TABLE"]
STORAGES = ["journal:", "journal:j.log", "sqlite:///", "sqlite:///s.db", "nosuch://x", "jsonl:t.jsonl", "s.db"]
NUMS = ["-1", "0", "1", "1", "2", "2", "10", "10", "x", "nan", "inf", "1e309"]
COMMON = {"--json": None, "--help": None}
REQUIRED = {("show",): ["--space", "--arch"], ("export",): ["--format", "--out"],
            ("latency", "predict"): ["--space", "--target", "--arch"]}
SPEC: dict[tuple[str, ...], tuple[list[list[str]], dict[str, list[str] | None]]] = {
    ("list",): ([["spaces", "targets", "strategies", "evaluators", "nope", ""]], {}),
    ("search",): ([], {"--space": SPACE_NAMES, "-o": OPTS, "--target": TARGETS, "--latency-ms": NUMS,
                       "--strategy": ["random", "evolution", "nope"], "--evaluator": ["zero-cost", "nope"],
                       "--strategy-option": ["population=x", "population=1", "sample_size=[1]", "nope=1", "p"],
                       "--evaluator-option": ["proxy=params", "proxy=nope", "batch=0", "batch=2", "resolution=x"],
                       "--trials": ["-1", "0", "1", "2", "x"], "--seed": NUMS, "--out": PATHS, "--resume": PATHS,
                       "--no-resume": None, "--storage": STORAGES, "--study": ["s", "", "done"],
                       "--max-retries": NUMS, "--runner": ["local", "nope"], "--workers": NUMS, "--quiet": None}),
    ("show",): ([], {"--space": SPACE_NAMES, "-o": OPTS, "--arch": ARCHS, "--target": TARGETS}),
    ("export",): ([PATHS], {"--format": ["onnx", "torch", "json", "nope", ""], "--out": ["x.onnx", "x.pt", "", "."],
                            "--seed": NUMS}),
    ("report",): ([PATHS], {"--storage": STORAGES, "--study": ["s", "done", "nope"], "--out": ["rep", ""],
                            "--x": ["latency_ms", "score", "nope"], "--y": ["score", "params_m", "nope"]}),
    ("latency", "predict"): ([], {"--space": SPACE_NAMES, "-o": OPTS, "--target": TARGETS, "--arch": ARCHS,
                                  "--breakdown": None}),
    ("latency", "show"): ([TARGETS], {"--space": SPACE_NAMES}),
    ("nope",): ([], {}),
}
JUNK_ARGS = ["--bogus", "-", "--", "--trials", "x", "é", "--version"]


@st.composite
def argv(draw: Any) -> list[str]:
    cmd = draw(st.sampled_from(sorted(SPEC)))
    positional, flags = SPEC[cmd]
    out = (["-v"] if not draw(st.integers(0, 9)) else []) + list(cmd)
    for flag in REQUIRED.get(cmd, []):
        if draw(st.integers(0, 9)):
            out += [flag, draw(st.sampled_from(flags[flag] or [""]))]
    if cmd == ("search",):    # any search that turns out valid stays short (later --trials <= 2)
        out += ["--trials", "1", "--evaluator-option", "proxy=params"]
        if draw(st.integers(0, 4)):   # mostly the tiny space (the full-size ones cost seconds per trial)
            out += ["--target", "TABLE", "-o", "width_mult=0.25", "-o", "resolution=32", "-o", "num_classes=10"]
    for pool in positional:
        if draw(st.integers(0, 5)):
            out.append(draw(st.sampled_from(pool)))
    options = {**flags, **COMMON}
    for _ in range(draw(st.integers(0, 7))):
        flag = draw(st.sampled_from(sorted(options)))
        if flag == "--help" and draw(st.integers(0, 9)):
            continue
        out.append(flag)
        values = options[flag]
        if values is not None and draw(st.integers(0, 8)):
            out.append(draw(st.sampled_from(values)))
    if not draw(st.integers(0, 14)):
        out.insert(draw(st.integers(0, len(out))), draw(st.sampled_from(JUNK_ARGS)))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder with a tiny latency table and a finished tiny search ("done") to point commands at."""
    from nas.cli.main import main
    root = tmp_path_factory.mktemp("fuzz")
    space = get_space("mbconv", width_mult=0.25, resolution=32, num_classes=10)
    table = LatencyTable("mbconv", space.options(), {"device": "synthetic"})
    for i, spec in enumerate(space.all_layers()):
        table.add(spec.key, 0.05 + 0.01 * (i % 7))
    table.save(root / "tiny.json")
    assert main(["search", "--space", "mbconv", "-o", "width_mult=0.25", "-o", "resolution=32", "-o",
                 "num_classes=10", "--target", str(root / "tiny.json"), "--trials", "3", "--evaluator-option",
                 "proxy=params", "--out", str(root / "done"), "--quiet"]) == 0
    arch = space.format(space.sample(np.random.default_rng(0)))
    return root, {"TABLE": str(root / "tiny.json"), "TINY_ARCH": arch}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])
@given(args=argv())
def test_cli_never_tracebacks(args: list[str], workdir: tuple[Path, dict[str, str]],
                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    root, subst = workdir
    args = [subst.get(a, a) for a in args]
    monkeypatch.chdir(root)   # relative --out/--storage values land in the fixture folder
    try:
        code = main(args)
    except SystemExit as exc:     # argparse: 2 for bad usage, 0 for --help/--version
        assert exc.code in (0, 2), args
    else:
        assert code in (0, 1, 2), args
    err = capsys.readouterr().err
    assert "Traceback" not in err, (args, err)
