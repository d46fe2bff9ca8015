"""The domain vocabulary and the raw contract are declared once, in the vars of dbt_project/dbt_project.yml, and
every consumer agrees with them: precision_marketing/contract.py (and expectations/suites.py through it), the dbt
macros, the checked_ rules and the schema tests as dbt compiles them. No other file re-types a vocabulary list.
And adding an event type is one line in that file: the copy of the project with one more key in event_weights
accepts it everywhere.

One `dbt compile` of the real project (and one of a copy) per session; no warehouse data is needed."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from precision_marketing import contract
from tests.test_dbt_project import run_dbt as dbt

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "dbt_project"
PROJECT_FILE = PROJECT / "dbt_project.yml"
RUN_VARS = '{ds: "2026-01-02", landed_dir: "/nonexistent/landed"}'
# typed_ models are incremental: compiling them asks the landed zone which partitions changed (needs data)
NEEDS_DATA = "path:models/staging/typed"

VARS = yaml.safe_load(PROJECT_FILE.read_text())["vars"]
VOCABULARY_NAMES = (
    "event_types",
    "placements",
    "campaign_channels",
    "consent_channels",
    "consent_statuses",
    "clicked_values",
)

# The vocabulary each schema test (model, column) and each checked_ rule (model, reason) must use.
ACCEPTED_VALUES = {
    ("stg_events", "event_type"): "event_types",
    ("stg_impressions", "placement"): "placements",
    ("stg_impressions", "clicked"): "clicked_values",
    ("stg_campaigns", "channel"): "campaign_channels",
    ("stg_campaigns", "placement"): "placements",
    ("stg_consent", "channel"): "consent_channels",
    ("stg_consent", "status"): "consent_statuses",
    ("campaigns", "channel"): "campaign_channels",
    ("suppressions", "channel"): "consent_channels",
    ("consent_ledger", "channel"): "consent_channels",
    ("consent_ledger", "status"): "consent_statuses",
    ("ctr_train", "clicked"): "clicked_values",
    ("data_reconciliation", "source"): "sources",
}
CHECKED_RULES = {
    ("checked_events", "invalid event_type"): "event_types",
    ("checked_impressions", "invalid placement"): "placements",
    ("checked_campaigns", "invalid channel"): "campaign_channels",
    ("checked_campaigns", "invalid placement"): "placements",
    ("checked_consent", "invalid channel"): "consent_channels",
    ("checked_consent", "invalid status"): "consent_statuses",
}


def vocabulary(variables: dict) -> dict[str, list[str]]:
    """The vocabulary lists as declared in the vars (event types: the keys of event_weights), and the sources."""
    lists = {name: list(variables[name]) for name in VOCABULARY_NAMES if name != "event_types"}
    return {"event_types": list(variables["event_weights"]), **lists, "sources": list(variables["raw_contract"])}


def run_dbt(project: Path, work: Path, *args: str) -> str:
    """`dbt compile` of `project` with the run vars; its output."""
    return dbt("compile", work, "--vars", RUN_VARS, *args, project=project).stdout


class Compiled:
    """A compiled dbt project: the compiled SQL of its models and tests, and the manifest."""

    def __init__(self, target: Path):
        self.manifest = json.loads((target / "manifest.json").read_text())
        self.target = target

    @staticmethod
    def sql(node: dict) -> str:
        return Path(node["compiled_path"]).read_text()

    def model_sql(self, name: str) -> str:
        return self.sql(self.manifest["nodes"][f"model.precision_marketing.{name}"])

    def accepted_values(self) -> dict[tuple[str, str], list[str]]:
        """(model, column) -> the values its accepted_values test checks, as compiled."""
        found = {}
        for node in self.manifest["nodes"].values():
            meta = node.get("test_metadata") or {}
            if node["resource_type"] == "test" and meta.get("name") == "accepted_values" and node.get("compiled_path"):
                model = node["attached_node"].rsplit(".", 1)[-1]
                inner = re.search(r"not in \((.*?)\)\s*$", self.sql(node), re.S).group(1)
                found[(model, node["column_name"])] = sql_list(inner)
        return found


def sql_list(inner: str) -> list[str]:
    """The items of a compiled SQL list: 'a','b' or 0,1 (unquoted) -> ['a', 'b'] / ['0', '1']."""
    return [item.strip().strip("'").replace("''", "'") for item in inner.split(",")]


def checked_rule(sql: str, reason: str) -> list[str]:
    match = re.search(r"not in \(([^)]*)\)\s*then\s*'" + re.escape(reason) + "'", sql)
    assert match, f"no `not in (...) then '{reason}'` rule"
    return sql_list(match.group(1))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Compiled, dict]:
    work = tmp_path_factory.mktemp("dbt_vocabulary")
    run_dbt(PROJECT, work, "--exclude", NEEDS_DATA, "--quiet")
    project = Compiled(work / "target")  # read before the next compile rewrites the manifest
    # raw_sources() itself, as dbt evaluates it (same target: partial parse)
    inline = run_dbt(PROJECT, work, "--inline", "{{ tojson(raw_sources()) }}", "--quiet")
    return project, json.loads(inline.strip().splitlines()[-1])


# ---- Python: contract.py and suites.py read the vars


def test_contract_py_is_the_vars():
    declared = vocabulary(VARS)
    assert list(contract.EVENT_TYPES) == declared["event_types"]
    assert contract.EVENT_WEIGHTS == {name: float(weight) for name, weight in VARS["event_weights"].items()}
    assert list(contract.PLACEMENTS) == declared["placements"]
    assert list(contract.CAMPAIGN_CHANNELS) == declared["campaign_channels"]
    assert list(contract.CONSENT_CHANNELS) == declared["consent_channels"]
    assert list(contract.CONSENT_STATUSES) == declared["consent_statuses"]
    assert list(contract.CLICKED_VALUES) == declared["clicked_values"]
    assert contract.SYNONYMS == VARS["synonyms"]
    assert list(contract.SOURCES) == declared["sources"]
    for name, spec in VARS["raw_contract"].items():
        source = contract.SOURCES[name]
        assert (source.kind, source.role, list(source.key), list(source.checked_key)) == (
            spec["kind"],
            spec["role"],
            spec["key"],
            spec["checked_key"],
        ), name
        assert [(c.name, c.type, c.required, list(c.allowed), c.rule, c.synonyms) for c in source.columns] == [
            (
                c["name"],
                c["type"],
                c.get("required", True),
                declared[c["allowed"]] if "allowed" in c else [],
                c.get("rule", ""),
                c.get("synonyms", ""),
            )
            for c in spec["columns"]
        ], name
    assert contract.BEHAVIOUR_SOURCES == tuple(n for n, s in VARS["raw_contract"].items() if s["role"] == "behaviour")
    assert contract.AUDIENCE_SOURCES == tuple(n for n, s in VARS["raw_contract"].items() if s["role"] == "audience")


def test_the_generator_finds_its_event_types_where_it_expects_them():
    # precision_marketing/datagen.py codes the events it simulates 0..3 and names them by position in EVENT_TYPES
    # (its output is byte-identical only with this order): new event types go after these four
    assert contract.EVENT_TYPES[:4] == ("view", "cart", "purchase", "favourite")


def test_every_enumeration_has_known_synonyms_and_values():
    for source in contract.SOURCES.values():
        for column in source.columns:
            assert not column.synonyms or column.synonyms in contract.SYNONYMS, (source.name, column.name)
            # a synonym maps to a value of the column's vocabulary
            assert set(contract.SYNONYMS.get(column.synonyms, {}).values()) <= set(column.allowed), column.name


def test_suites_take_the_vocabulary_from_the_contract():
    from expectations import suites

    assert suites.PLACEMENTS == list(contract.PLACEMENTS)
    assert suites.CHANNELS == list(contract.CAMPAIGN_CHANNELS)
    in_sets = {e.column: list(e.value_set) for e in suites.suppressions() if hasattr(e, "value_set")}
    assert in_sets["channel"] == list(contract.CONSENT_CHANNELS)


def test_load_contract_refuses_an_unknown_vocabulary_name(tmp_path):
    broken = tmp_path / "dbt_project.yml"
    broken.write_text(PROJECT_FILE.read_text().replace("allowed: placements,", "allowed: placement,", 1))
    with pytest.raises(ValueError, match="allowed names no vocabulary list"):
        contract.load_contract(broken)


# ---- dbt: the macros, the checked_ rules and the schema tests, as compiled


def test_raw_sources_macro_is_the_contract(compiled):
    _, raw_sources = compiled
    assert raw_sources == {
        name: {"kind": source.kind, "key": list(source.checked_key), "columns": source.column_names}
        for name, source in contract.SOURCES.items()
    }


def test_the_landed_dbt_sources_are_the_contracts_and_each_reader_depends_on_its_own(compiled):
    """models/staging/_landed.yml lists the landed zone as dbt sources (the start of the dbt graph and of the
    lineage Cosmos reports): one per contract source, and every model that reads a source's landed rows has it as
    a parent (read_landed registers it)."""
    project, _ = compiled
    landed = {s["name"] for s in project.manifest["sources"].values() if s["source_name"] == "landed"}
    assert landed == set(contract.SOURCES)
    parents = {
        node["name"]: node["depends_on"]["nodes"]
        for node in project.manifest["nodes"].values()
        if node["resource_type"] == "model"
    }
    for source in contract.SOURCES:
        reader = f"typed_{source}" if contract.SOURCES[source].kind == "increment" else f"checked_{source}"
        assert f"source.precision_marketing.landed.{source}" in parents[reader], reader


def test_reconciliation_uses_the_checked_keys(compiled):
    project, _ = compiled
    sql = project.model_sql("data_reconciliation_partitions")
    for name, source in contract.SOURCES.items():
        block = sql[sql.index(f"'{name}' as source") :]
        assert f"partition by reject_reason is null, {', '.join(source.checked_key)} order by" in block, name


def test_snapshot_readers_select_the_contract_columns_in_order(compiled):
    project, _ = compiled
    for name, source in contract.SOURCES.items():
        if source.kind != contract.SNAPSHOT:
            continue  # increments are read by the typed_ models, which need landed data to compile
        sql = project.model_sql(f"checked_{name}")
        struct = re.search(r"\{([^{}]*)\} as raw_values", sql).group(1)
        assert re.findall(r"'(\w+)': \"\w+\"", struct) == source.column_names, name
        assert f"/{name}/ds=2026-01-02/*.parquet" in sql, name  # a snapshot reads the partition of ds only


def test_checked_rules_use_the_vocabulary(compiled):
    project, _ = compiled
    declared = vocabulary(VARS)
    for (model, reason), name in CHECKED_RULES.items():
        assert checked_rule(project.model_sql(model), reason) == declared[name], (model, reason)
    # consent fails safe on the channels it knows
    assert re.search(r"channel in \(([^)]*)\) then channel", project.model_sql("checked_consent")).group(
        1
    ) == ", ".join(f"'{c}'" for c in declared["consent_channels"])


def test_schema_tests_check_the_vocabulary_as_a_list(compiled):
    """dbt renders the Jinja of test arguments natively: "{{ var('placements') }}" arrives as a list (a string
    would compile to one value per character)."""
    project, _ = compiled
    declared = vocabulary(VARS)
    found = project.accepted_values()
    assert set(found) == set(ACCEPTED_VALUES), "an accepted_values test without a vocabulary here (or gone)"
    for key, name in ACCEPTED_VALUES.items():
        assert found[key] == declared[name], key


def test_event_weights_macro_uses_every_event_type(compiled):
    project, _ = compiled
    sql = project.model_sql("int_weighted_events")
    weights = dict(re.findall(r"when '(\w+)' then cast\(([\d.]+) as double\)", sql))
    assert {name: float(weight) for name, weight in weights.items()} == {**contract.EVENT_WEIGHTS, "return": 0.0}


# ---- nowhere else: no other file re-types a vocabulary list

# A literal list naming at least two values of one vocabulary list is a re-typed vocabulary (in dbt files also a
# list of two or more source names). Unit-test fixture rows (mappings) are not lists and do not count.
# Allowed, with the reason: the synthetic generator's own simulation parameters. It draws these values by
# position (round-robin, or with a probability per value), so they must stay fixed for byte-identical data
# whatever the vars' order, and a new value needs its own simulated behaviour anyway.
ALLOWED_LISTS = {
    ("precision_marketing/datagen.py", ("homepage_banner", "product_page", "search_results")),  # on-site placements
    ("precision_marketing/datagen.py", ("email", "push", "onsite")),  # campaign channel, round-robin
    ("precision_marketing/datagen.py", ("email", "push", "onsite", "all")),  # consent changes, p per channel
}
QUOTED_LIST = re.compile(r"""[(\[]\s*((?:'[^'\n]*'|"[^"\n]*")(?:\s*,\s*(?:'[^'\n]*'|"[^"\n]*"))+)\s*,?\s*[)\]]""")


def retyped(values: list, where: str, *, sources: bool = True) -> list[str]:
    strings = [value for value in values if isinstance(value, str)]
    ignored = {"clicked_values"} | (set() if sources else {"sources"})  # 0/1 is no vocabulary to grep for
    return [
        f"{where}: {strings} re-types {name}"
        for name, vocabulary_list in vocabulary(VARS).items()
        if name not in ignored and len(set(strings) & set(vocabulary_list)) >= 2
    ]


def python_lists(path: Path) -> list[str]:
    """Literal lists, tuples and sets of a module (Python picks sources by role, e.g. ("users", "products"): not
    checked for source names)."""
    tree = ast.parse(path.read_text(), str(path))
    relative = path.relative_to(REPO).as_posix()
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and all(isinstance(e, ast.Constant) for e in node.elts):
            values = tuple(e.value for e in node.elts)
            if (relative, values) not in ALLOWED_LISTS:
                problems += retyped(list(values), f"{relative}:{node.lineno}", sources=False)
    return problems


def yaml_lists(node, where: str) -> list[str]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in yaml_lists(value, f"{where}.{key}")]
    if isinstance(node, list):
        scalars = [item for item in node if not isinstance(item, (dict, list))]
        return retyped(scalars, where) + [p for i, item in enumerate(node) for p in yaml_lists(item, f"{where}[{i}]")]
    return []


def test_no_file_retypes_a_vocabulary_list():
    problems = []
    for path in sorted([*(PROJECT / "models").rglob("*.sql"), *(PROJECT / "macros").rglob("*.sql")]):
        for match in QUOTED_LIST.finditer(path.read_text()):
            items = re.findall(r"""'([^']*)'|"([^"]*)\"""", match.group(1))
            problems += retyped([a or b for a, b in items], path.relative_to(REPO).as_posix())
    for path in sorted((PROJECT / "models").rglob("*.yml")):
        problems += yaml_lists(yaml.safe_load(path.read_text()), path.relative_to(REPO).as_posix())
    for package in ("precision_marketing", "expectations"):
        for path in sorted((REPO / package).rglob("*.py")):
            if "data_docs_vendor" not in path.parts:
                problems += python_lists(path)
    assert problems == []


def test_the_check_catches_a_retyped_list():
    assert retyped(["view", "cart", "purchase", "favourite"], "x")
    assert yaml_lists(
        {"values": ["email", "push", "onsite"], "rows": [{"channel": "email"}, {"channel": "push"}]}, "y"
    ) == [
        "y.values: ['email', 'push', 'onsite'] re-types placements",
        "y.values: ['email', 'push', 'onsite'] re-types campaign_channels",
        "y.values: ['email', 'push', 'onsite'] re-types consent_channels",
    ]
    sql = "when typed.event_type not in ('view', 'cart') then 'invalid event_type'"
    assert retyped([a or b for a, b in re.findall(r"""'([^']*)'|"([^"]*)\"""", QUOTED_LIST.search(sql).group(1))], "z")
    assert retyped(["purchase", "return"], "one value of a list is no list") == []


# ---- add an event type = one line in dbt_project.yml (plus the doc, which test_raw_contract keeps honest)


def test_adding_an_event_type_is_one_line_in_dbt_project_yml(tmp_path):
    copy = tmp_path / "dbt_project"
    shutil.copytree(PROJECT, copy, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml"))
    project_file = copy / "dbt_project.yml"
    text = project_file.read_text()
    line = re.search(r"^  event_weights: \{.*\}", text, re.M).group(0)
    project_file.write_text(text.replace(line, line[:-1] + ", share: 2}"))
    assert [
        p.name
        for p in copy.rglob("*")
        if p.is_file() and p.read_bytes() != (PROJECT / p.relative_to(copy)).read_bytes()
    ] == ["dbt_project.yml"]

    # Python: the contract loaded from that file accepts it
    changed = contract.load_contract(project_file)
    assert changed.event_types == (*contract.EVENT_TYPES, "share")
    assert changed.event_weights["share"] == 2.0
    assert "share" in changed.sources["events"].column("event_type").allowed

    # dbt: the checked_events rule, the accepted values of stg_events and the weight
    work = tmp_path / "work"
    work.mkdir()
    run_dbt(copy, work, "--select", "checked_events", "stg_events", "int_weighted_events", "--quiet")
    project = Compiled(work / "target")
    assert checked_rule(project.model_sql("checked_events"), "invalid event_type") == list(changed.event_types)
    assert project.accepted_values()[("stg_events", "event_type")] == list(changed.event_types)
    assert "when 'share' then cast(2 as double)" in project.model_sql("int_weighted_events")
