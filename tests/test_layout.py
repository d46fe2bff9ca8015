"""The package's plan holds: imports run only downward through the stages (precision_marketing/__init__.py
draws it) and no module imports itself back through others. Reads the source (function-level imports
included), imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("precision_marketing", "expectations", "spark_jobs", "dags")

# Higher imports lower, never the reverse. Units on one level may import each other as long as no circle forms.
LEVELS = {
    "dags": 5,
    "precision_marketing.cli": 5,
    "precision_marketing.orchestration": 4,
    "precision_marketing.pipeline": 3,
    "precision_marketing.ingest": 2,
    "expectations": 2,
    "precision_marketing.training": 2,
    "precision_marketing.campaigns": 2,
    "precision_marketing.publish": 2,
    "precision_marketing.reporting": 2,
    "precision_marketing.privacy": 2,
    "precision_marketing.datagen": 2,
    "precision_marketing.contract": 1,
    "precision_marketing.storage": 1,
    "precision_marketing.config": 1,
    "spark_jobs": 0,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "data_docs_vendor" not in path.parts and module_name(path) != "precision_marketing":  # the drawing
                found[module_name(path)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            for candidate in candidates:
                # the deepest known module the import names (a submodule, else the module it comes from)
                while candidate and candidate not in known:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def unit(module: str) -> str:
    return max((u for u in LEVELS if module == u or module.startswith(u + ".")), key=len)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one member (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_level():
    missing = [name for name in modules() if not any(name == u or name.startswith(u + ".") for u in LEVELS)]
    assert not missing, f"modules outside the drawing (add them to LEVELS and the package docstring): {missing}"


def test_no_import_circle_between_modules():
    assert cycles(import_graph()) == []


def test_no_import_circle_between_stages():
    graph = import_graph()
    units: dict[str, set[str]] = {}
    for source, targets in graph.items():
        units.setdefault(unit(source), set()).update(unit(t) for t in targets if unit(t) != unit(source))
    assert cycles(units) == []


def test_imports_only_run_downward():
    upward = [
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        for target in targets
        if LEVELS[unit(target)] > LEVELS[unit(source)]
    ]
    assert upward == []


def test_spark_jobs_ship_alone():
    """spark-submit sends spark_jobs/ to the executors; it must not need this package or expectations/."""
    outside = [
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        if source.startswith("spark_jobs")
        for target in targets
        if not target.startswith("spark_jobs")
    ]
    assert outside == []


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    "sub_package", sorted(p.parent.name for p in (ROOT / "precision_marketing").glob("*/__init__.py"))
)
def test_each_stage_says_what_it_is(sub_package):
    doc = ast.get_docstring(ast.parse((ROOT / "precision_marketing" / sub_package / "__init__.py").read_text()))
    assert doc and len(doc) > 80, f"precision_marketing/{sub_package}/__init__.py needs its one-paragraph docstring"


# ------------------------------------------------------------------------------ one place per fact
def test_every_published_table_has_its_suite_and_its_documented_schema():
    """Adding a published table = its OUTPUTS entry (pipeline.py), its suite (expectations/suites.py), its
    schema (docs/tables.md): the DAG's Assets, `publish.tables: all`, the catalog and the report follow."""
    from expectations.suites import LAYERS
    from precision_marketing.config import load_config
    from precision_marketing.pipeline import OUTPUTS, PUBLISHED_TABLES, published_tables

    documented = {
        line[4:].split(" ")[0]
        for line in (ROOT / "docs" / "tables.md").read_text().splitlines()
        if line.startswith("### ")
    }
    assert set(OUTPUTS) <= set(LAYERS["outputs"]), "every published table needs an outputs suite"
    assert set(OUTPUTS) <= documented, "every published table needs its schema in docs/tables.md"
    assert published_tables(load_config()) == list(PUBLISHED_TABLES)


def test_the_spark_jobs_settings_are_the_configuration_sections():
    """A model setting is its key in config/platform.yaml, its type in config/schema.py and its use in the job:
    the step hands the checked sections over whole, so no list of flags has to follow."""
    import dataclasses

    from precision_marketing.config import load_config
    from spark_jobs.als_recommendations import RecConfig
    from spark_jobs.ctr_audiences import ActivationConfig, CtrConfig

    config = load_config()
    assert RecConfig.from_settings(config["als"]) == RecConfig.defaults()
    assert CtrConfig.from_settings(config["ctr"]) == CtrConfig.defaults()
    assert ActivationConfig.from_settings(config["activation"]) == ActivationConfig.defaults()
    flat = {field.name for field in dataclasses.fields(RecConfig)} - {"num_blocks"}
    nested = {f"{group}_{key}" for group in ("tuning", "gate") for key in config["als"][group]}
    search = {"alpha_range", "reg_range", "rank_range", "neighbours_choices"}
    tuned = {name.replace("tuning_", "tune_") for name in nested}
    assert flat == (set(config["als"]) - {"search", "tuning", "gate"}) | search | tuned, (
        "RecConfig and the als section of config/platform.yaml name the same settings"
    )
