"""The bad-input suite: every kind of bad input a real export brings, and where each of its rows went.

Row-level kinds: each kind is its own landing file (the partitions' file pattern reads them all), so every
data row of every file has an expected outcome: clean, duplicate, or quarantined with an exact reason. One
ingest + one `dbt build` runs on the whole raw zone (module fixture); each kind then asserts its rows and the
whole zone reconciles (raw = clean + quarantined + duplicates, per source and per file). File-level kinds
(a 0-byte file, a wrong delimiter, a missing column, a late delivery, ...) stop the run before dbt: they are
checked on the ingest step alone, with the message that names the place.

The mapping of this raw zone reads user ids as integers and product ids as strings (SKUs), order timestamps as
'%d/%m/%Y %H:%M' in Europe/Paris, impression times as epoch milliseconds, and excludes the POST product code.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from expectations.quarantine_share import QuarantineShareError, check_quarantine_share
from precision_marketing.contract import RawContractError
from precision_marketing.ingest.land import land_window
from precision_marketing.ingest.mapping import MappingError, load_mapping
from precision_marketing.publish.ids import restore_original_ids
from precision_marketing.publish.partitions import PublishError
from tests.test_dbt_project import query, run_dbt

DS, DAY1, DAY2 = "2026-03-10", "2026-03-08", "2026-03-09"
HISTORY = 3
MAPPING = """
ids: {user_id: integer, product_id: string}
sources:
  orders:
    columns: {order_id: Invoice}
    timestamps: {formats: ["%d/%m/%Y %H:%M"], timezone: Europe/Paris}
    exclude: {product_id: [POST]}
  impressions:
    timestamps: {epoch: milliseconds}
"""
HEADERS = {
    "users": "user_id,email,country,signup_date",
    "products": "product_id,title,category,brand,price",
    "events": "event_id,user_id,product_id,event_type,event_ts,session_id",
    "orders": "Invoice,user_id,product_id,quantity,unit_price,order_ts",
    "impressions": "impression_id,user_id,campaign_id,placement,impression_ts,clicked",
    "campaigns": "campaign_id,name,target_category,channel,placement,start_date,end_date,audience_size",
    "consent": "user_id,channel,status,updated_ts",
}
CLEAN, DUPLICATE = "clean", "duplicate"
FAIL_SAFE_USERS = range(101, 114)  # one per kind of broken or contested opt-out
BAD_BYTE = b"\xe9"  # 'é' in Latin-1: not valid UTF-8 on its own


def epoch_ms(text: str) -> str:
    return str(int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000))


@dataclass
class Kind:
    name: str
    source: str
    day: str
    content: bytes  # the landing file as delivered
    outcomes: list[str]  # per data row: clean | duplicate | the exact reject reason

    @property
    def file(self) -> str:
        return f"raw/{self.source}/ds={self.day}/{self.name}.csv"


def rows(source: str, *lines: str, header: str | None = None) -> bytes:
    return ("\n".join([header or HEADERS[source], *lines]) + "\n").encode()


BASE = [  # the clean deliveries the kinds refer to (users, products, campaigns, consent of ds)
    Kind(
        "base_users",
        "users",
        DS,
        rows("users", *[f"{u},u{u}@example.com,FR,2025-01-01" for u in (1, 2, 3, 5000000000, *FAIL_SAFE_USERS)]),
        [CLEAN] * (4 + len(FAIL_SAFE_USERS)),
    ),
    Kind(
        "base_products",
        "products",
        DS,
        rows(
            "products",
            "P1,Mug,kitchen,acme,4.50",
            "P2,Plate,kitchen,acme,7",
            "P3,Lamp,home,lux,30",
            "85123A,Heart holder,home,lux,2.55",
        ),
        [CLEAN] * 4,
    ),
    Kind(
        "base_campaigns",
        "campaigns",
        DS,
        rows(
            "campaigns",
            "c1,Mail,kitchen,email,email,2026-03-01,2026-03-31,100",
            "c2,Push,home,push,push,2026-03-01,2026-03-31,100",
            "c3,Banner,home,onsite,homepage_banner,2026-03-01,2026-03-31,100",
        ),
        [CLEAN] * 3,
    ),
    Kind(
        "base_consent",
        "consent",
        DS,
        rows("consent", *[f"{u},all,opt_in,2026-01-01 00:00:00" for u in (1, 2, 3, *FAIL_SAFE_USERS)]),
        [CLEAN] * (3 + len(FAIL_SAFE_USERS)),
    ),
    Kind(
        "base_events",
        "events",
        DAY1,
        rows(
            "events", *[f"b{u},{u},P{1 + u % 3},purchase,2026-03-08 10:00:00,s{u}" for u in (1, 2, 3, *FAIL_SAFE_USERS)]
        ),
        [CLEAN] * (3 + len(FAIL_SAFE_USERS)),
    ),
]

LATIN1_TITLE = b"P9,Caf" + BAD_BYTE + b" cup,kitchen,acme,3.10"
KINDS = [
    # ---- events: timestamps, enumerations, ids, CSV shape
    Kind(
        "iso_8601_with_offset",
        "events",
        DS,
        rows("events", "e-iso1,1,P1,view,2026-03-10T00:55:33+08:00,s", "e-iso2,1,P1,view,2026-03-09T22:00:00Z,s"),
        [CLEAN, CLEAN],
    ),
    Kind(
        "upper_case_enumeration",
        "events",
        DS,
        rows("events", "e-up1,1,P1,VIEW,2026-03-10 09:00:00,s", "e-up2,1,P1, Purchase ,2026-03-10 09:01:00,s"),
        [CLEAN, CLEAN],
    ),
    Kind("enumeration_synonym", "events", DS, rows("events", "e-syn,2,P1,addtocart,2026-03-10 09:00:00,s"), [CLEAN]),
    Kind(
        "invalid_enumeration",
        "events",
        DS,
        rows("events", "e-inv,2,P1,click,2026-03-10 09:00:00,s"),
        ["invalid event_type"],
    ),
    Kind(
        "future_timestamp",
        "events",
        DS,
        rows("events", "e-fut,2,P1,view,2031-01-01 10:00:00,s", "e-ok,2,P1,view,2026-03-10 23:59:59,s"),
        ["event_ts in the future", CLEAN],
    ),
    Kind(
        "malformed_timestamp",
        "events",
        DS,
        rows("events", "e-mal,2,P1,view,2026-13-45 25:61:00,s"),
        ["malformed event_ts"],
    ),
    Kind(
        "user_id_beyond_64_bits",
        "events",
        DS,
        rows("events", "e-big,99999999999999999999,P1,view,2026-03-10 09:00:00,s"),
        ["user_id beyond the 64-bit integer range"],
    ),
    Kind(
        "user_id_beyond_32_bits",
        "events",
        DS,
        rows("events", "e-5e9,5000000000,P2,cart,2026-03-10 09:00:00,s"),
        [CLEAN],
    ),
    Kind(
        "malformed_user_id",
        "events",
        DS,
        rows("events", "e-mu,u-3,P1,view,2026-03-10 09:00:00,s"),
        ["malformed user_id"],
    ),
    Kind("string_sku", "events", DS, rows("events", "e-sku,3,85123A,view,2026-03-10 09:00:00,s"), [CLEAN]),
    Kind(
        "product_id_too_long",
        "events",
        DS,
        rows("events", f"e-long,3,{'X' * 200},view,2026-03-10 09:00:00,s"),
        ["product_id longer than 128 characters"],
    ),
    Kind(
        "unknown_product",
        "events",
        DS,
        rows("events", "e-unk,3,NOPE,view,2026-03-10 09:00:00,s"),
        ["unknown product_id"],
    ),
    Kind("unknown_user", "events", DS, rows("events", "e-unu,4,P1,view,2026-03-10 09:00:00,s"), ["unknown user_id"]),
    Kind("null_user_id", "events", DS, rows("events", "e-nul,,P1,view,2026-03-10 09:00:00,s"), ["user_id is null"]),
    Kind(
        "short_row",
        "events",
        DS,
        rows("events", "e-short,3,P1,view,2026-03-10 09:00:00"),
        ["row has 5 fields, the header has 6"],
    ),
    Kind(
        "long_row",
        "events",
        DS,
        rows(
            "events", "e-wide,3,P1,view,2026-03-10 09:00:00,s,extra,more", "e-trail,3,P1,view,2026-03-10 09:00:00,s,,"
        ),
        ["row has 8 fields, the header has 6", CLEAN],
    ),
    Kind(
        "unterminated_quote",
        "events",
        DS,
        rows("events", "e-q1,3,P1,view,2026-03-10 09:00:00,s", 'e-q2,3,"P1,view,2026-03-10 09:00:00,s'),
        [CLEAN, "unterminated quoted field (the quote opened on this row is never closed)"],
    ),
    Kind(
        "broken_quoting",
        "events",
        DS,
        rows("events", '"e-bq"x,3,P1,view,2026-03-10 09:00:00,s', "e-bq2,3,P1,view,2026-03-10 09:00:00,s"),
        ["broken CSV quoting (',' expected after '\"')", CLEAN],
    ),
    Kind(
        "bom_and_crlf",
        "events",
        DS,
        b"\xef\xbb\xbf"
        + rows("events", "e-crlf1,1,P1,view,2026-03-10 09:00:00,s", "e-crlf2,1,P2,view,2026-03-10 09:00:00,s").replace(
            b"\n", b"\r\n"
        ),
        [CLEAN, CLEAN],
    ),
    Kind(
        "extra_and_reordered_columns",
        "events",
        DS,
        rows(
            "events",
            "s,2026-03-10 09:00:00,view,P3,1,e-ro,vendor note",
            header="session_id,event_ts,event_type,product_id,user_id,event_id,note",
        ),
        [CLEAN],
    ),
    Kind("header_only", "events", DS, rows("events"), []),
    Kind(
        "blank_lines",
        "events",
        DS,
        rows("events", "", "e-bl1,1,P1,view,2026-03-10 09:00:00,s", "  ", "e-bl2,1,P2,view,2026-03-10 09:00:00,s"),
        [CLEAN, CLEAN],
    ),
    Kind(
        "duplicate_rows",
        "events",
        DS,
        rows("events", "e-dup,1,P3,view,2026-03-10 09:00:00,s", "e-dup,1,P3,view,2026-03-10 09:00:00,s"),
        [CLEAN, DUPLICATE],
    ),
    Kind(
        "duplicate_delivery_a",
        "events",
        DAY2,
        rows("events", "e-dd1,2,P1,view,2026-03-09 09:00:00,s", "e-dd2,2,P2,view,2026-03-09 09:00:00,s"),
        [CLEAN, CLEAN],
    ),
    Kind(
        "duplicate_delivery_b",
        "events",
        DAY2,
        rows("events", "e-dd1,2,P1,view,2026-03-09 09:00:00,s", "e-dd2,2,P2,view,2026-03-09 09:00:00,s"),
        [DUPLICATE, DUPLICATE],
    ),
    Kind(
        "no_event_ids",
        "events",
        DAY2,
        rows(
            "events",
            "2,P3,view,2026-03-09 10:00:00",
            "2,P3,view,2026-03-09 10:00:00",
            "2,P3,view,2026-03-09 10:00:01",
            header="user_id,product_id,event_type,event_ts",
        ),
        [CLEAN, DUPLICATE, CLEAN],
    ),
    Kind(
        "undecodable_byte",
        "events",
        DAY2,
        rows("events", "e-l1,2,P1,view,2026-03-09 09:00:00,s").rstrip(b"\n")
        + b"\ne-l2,2,P1,view,2026-03-09 09:00:00,caf"
        + BAD_BYTE
        + b"\ne-l3,2,P2,view,2026-03-09 09:00:00,s\n",
        [CLEAN, "undecodable byte", CLEAN],
    ),
    # ---- products
    Kind(
        "latin1_byte_in_title",
        "products",
        DS,
        rows("products", "P8,Bowl,kitchen,acme,5").rstrip(b"\n")
        + b"\n"
        + LATIN1_TITLE
        + b"\n"
        + b"P10,Spoon,kitchen,acme,1.20\n",
        [CLEAN, "undecodable byte", CLEAN],
    ),
    Kind(
        "embedded_newline", "products", DS, rows("products", 'P11,"Two-line\ntitle, with comma",home,lux,9.90'), [CLEAN]
    ),
    Kind(
        "absurd_price",
        "products",
        DS,
        rows("products", "P12,Gold mug,kitchen,acme,999999999"),
        ["absurd price (above 1000000)"],
    ),
    Kind("decimal_comma", "products", DS, rows("products", 'P13,Plate,kitchen,acme,"12,50"'), ["malformed price"]),
    Kind("non_positive_price", "products", DS, rows("products", "P14,Free,kitchen,acme,0"), ["non-positive price"]),
    # ---- orders (the mapping: Invoice -> order_id, '%d/%m/%Y %H:%M' Paris time, POST excluded)
    Kind("custom_format_and_time_zone", "orders", DS, rows("orders", "o1,1,P1,2,4.50,10/03/2026 09:30"), [CLEAN]),
    Kind("return_line", "orders", DS, rows("orders", "Co1,1,P1,-1,4.50,10/03/2026 10:00"), [CLEAN]),
    Kind("float_integer_id", "orders", DS, rows("orders", "o2,2.0,P2,1,7.00,10/03/2026 11:00"), [CLEAN]),
    Kind("zero_quantity", "orders", DS, rows("orders", "o3,2,P2,0,7.00,10/03/2026 11:00"), ["zero quantity"]),
    Kind(
        "absurd_quantity",
        "orders",
        DS,
        rows("orders", "o4,2,P2,10000000,7.00,10/03/2026 11:00"),
        ["absurd quantity (beyond 100000 either way)"],
    ),
    Kind(
        "excluded_by_mapping",
        "orders",
        DS,
        rows("orders", "o5,2,POST,1,7.00,10/03/2026 11:00"),
        ["excluded by the mapping: product_id = 'POST'"],
    ),
    Kind(
        "non_positive_unit_price",
        "orders",
        DS,
        rows("orders", "o6,2,P2,1,0,10/03/2026 11:00"),
        ["non-positive unit_price"],
    ),
    Kind("guest_checkout", "orders", DS, rows("orders", "o7,,P2,1,7.00,10/03/2026 11:00"), ["user_id is null"]),
    Kind(
        "timestamp_not_in_mapped_format",
        "orders",
        DS,
        rows("orders", "o8,2,P2,1,7.00,2026-03-10 11:00:00"),
        ["malformed order_ts"],
    ),
    # ---- impressions (epoch milliseconds); ds holds only the all-invalid delivery
    Kind(
        "epoch_milliseconds",
        "impressions",
        DAY2,
        rows("impressions", f"i1,1,c1,email,{epoch_ms('2026-03-09 12:00:00')},0"),
        [CLEAN],
    ),
    Kind(
        "clicked_synonym",
        "impressions",
        DAY2,
        rows("impressions", f"i2,2,c2,push,{epoch_ms('2026-03-09 12:00:00')},yes"),
        [CLEAN],
    ),
    Kind(
        "unknown_campaign",
        "impressions",
        DAY2,
        rows("impressions", f"i3,2,c9,push,{epoch_ms('2026-03-09 12:00:00')},0"),
        ["unknown campaign_id"],
    ),
    Kind(
        "invalid_clicked",
        "impressions",
        DAY2,
        rows("impressions", f"i4,2,c2,push,{epoch_ms('2026-03-09 12:00:00')},maybe"),
        ["invalid clicked"],
    ),
    Kind(
        "all_invalid_day",
        "impressions",
        DS,
        rows("impressions", *[f"x{n},{n},c1,sidebar,1773144000000,0" for n in (1, 2, 3)]),
        ["invalid placement"] * 3,
    ),
    # ---- campaigns
    Kind(
        "end_before_start",
        "campaigns",
        DS,
        rows("campaigns", "c4,Backwards,home,push,push,2026-03-31,2026-03-01,10"),
        ["end_date before start_date"],
    ),
    Kind(
        "absurd_audience_size",
        "campaigns",
        DS,
        rows("campaigns", "c5,Everyone,home,push,push,2026-03-01,2026-03-31,99999999999"),
        ["absurd audience_size (above 100000000)"],
    ),
    Kind(
        "channel_synonym",
        "campaigns",
        DS,
        rows("campaigns", "c6,Mail 2,home,E-Mail,email,2026-03-01,2026-03-31,5"),
        [CLEAN],
    ),
    # ---- users
    Kind("malformed_date", "users", DS, rows("users", "201,a@x.com,FR,2026-02-30"), ["malformed signup_date"]),
    Kind("lower_case_country", "users", DS, rows("users", "202,b@x.com,gb,2025-05-01"), [CLEAN]),
    Kind("date_in_the_future", "users", DS, rows("users", "203,c@x.com,FR,2031-05-01"), ["signup_date in the future"]),
    # ---- consent: every broken opt-out suppresses (users 101-110), case and synonyms are normalised
    Kind(
        "consent_upper_case_channel", "consent", DS, rows("consent", "101,EMAIL,opt_out,2026-03-01 00:00:00"), [CLEAN]
    ),
    Kind(
        "consent_status_synonym", "consent", DS, rows("consent", "102,email,Unsubscribed,2026-03-01 00:00:00"), [CLEAN]
    ),
    Kind(
        "consent_invalid_channel",
        "consent",
        DS,
        rows("consent", "103,sms,opt_out,2026-03-01 00:00:00"),
        ["invalid channel; user suppressed on all channels"],
    ),
    Kind(
        "consent_invalid_status",
        "consent",
        DS,
        rows("consent", "104,email,maybe,2026-03-01 00:00:00"),
        ["invalid status; user suppressed on email"],
    ),
    Kind(
        "consent_malformed_time",
        "consent",
        DS,
        rows("consent", "105,push,opt_out,yesterday"),
        ["malformed updated_ts; user suppressed on push"],
    ),
    Kind(
        "consent_null_channel",
        "consent",
        DS,
        rows("consent", "106,,opt_out,2026-03-01 00:00:00"),
        ["channel is null; user suppressed on all channels"],
    ),
    Kind(
        "consent_future_opt_in",
        "consent",
        DS,
        rows("consent", "107,email,opt_out,2026-03-01 00:00:00", "107,email,opt_in,2031-01-01 00:00:00"),
        [CLEAN, "updated_ts in the future; user suppressed on email"],
    ),
    Kind(
        "consent_garbled_row",
        "consent",
        DS,
        rows("consent", "108,email"),
        ["row has 2 fields, the header has 4; user suppressed on all channels"],
    ),
    Kind(
        "consent_undecodable",
        "consent",
        DS,
        rows("consent").rstrip(b"\n") + b"\n109,e-ma" + BAD_BYTE + b"l,opt_out,2026-03-01 00:00:00\n",
        ["undecodable byte"],
    ),
    Kind(
        "consent_null_status",
        "consent",
        DS,
        rows("consent", "110,email,,2026-03-01 00:00:00"),
        ["status is null; user suppressed on email"],
    ),
    Kind(  # the same second: both rows count, the opt-out wins
        "consent_same_second",
        "consent",
        DS,
        rows("consent", "111,email,opt_in,2026-03-01 00:00:00", "111,email,opt_out,2026-03-01 00:00:00"),
        [CLEAN, CLEAN],
    ),
    Kind(  # half a second apart: the later opt-in releases (its fraction is kept, not truncated into a tie)
        "consent_sub_second",
        "consent",
        DS,
        rows("consent", "112,push,opt_out,2026-03-01 00:00:00.200", "112,push,opt_in,2026-03-01 00:00:00.700"),
        [CLEAN, CLEAN],
    ),
    Kind(  # a boolean status means nothing without the export's column name: invalid, so it suppresses
        "consent_boolean_status",
        "consent",
        DS,
        rows("consent", "113,email,yes,2026-03-01 00:00:00"),
        ["invalid status; user suppressed on email"],
    ),
]
SUPPRESSED = {
    101: {"email"},
    102: {"email"},
    103: {"all"},
    104: {"email"},
    105: {"push"},
    106: {"all"},
    107: {"email"},
    108: {"all"},
    109: {"all"},
    110: {"email"},
    111: {"email"},
    112: set(),
    113: {"email"},
}


def write_zone(root: Path, kinds: list[Kind]) -> Path:
    for kind in kinds:
        path = root / kind.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(kind.content)
    return root / "raw"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    work = tmp_path_factory.mktemp("bad_input")
    raw = write_zone(work, BASE + KINDS)
    (work / "mapping.yaml").write_text(MAPPING)
    mapping = load_mapping(work / "mapping.yaml")
    status = land_window(raw, work / "landed", DS, HISTORY, mapping)
    run_dbt(
        "build",
        work,
        "--vars",
        json.dumps(
            {
                "ds": DS,
                "landed_dir": str(work / "landed"),
                "history_days": HISTORY,
                "id_types": mapping.as_dbt_var(),
                "future_tolerance_hours": 24,
            }
        ),
    )
    return {"work": work, "status": status, "mapping": mapping}


def outcomes_of(work: Path, kind: Kind) -> list[str]:
    """Where each landed row of the kind's file went, in row order."""
    found = query(
        work,
        f"""
        select c.source_row, c.reject_reason, s.source_row is not null as won
        from staging.checked_{kind.source} c
        left join staging.stg_{kind.source} s on s.source_file = c.source_file and s.source_row = c.source_row
        where c.source_file = ? order by c.source_row""",
        [kind.file],
    )
    assert [r[0] for r in found] == list(range(1, len(found) + 1)), f"{kind.name}: rows are numbered 1..n"
    return [reason if reason is not None else (CLEAN if won else DUPLICATE) for _, reason, won in found]


def test_the_suite_covers_at_least_30_kinds():
    assert len(KINDS) + len(FILE_LEVEL_KINDS) >= 30
    assert len({kind.name for kind in KINDS}) == len(KINDS)


@pytest.mark.parametrize("kind", BASE + KINDS, ids=lambda kind: kind.name)
def test_every_row_goes_where_expected(suite, kind):
    actual = outcomes_of(suite["work"], kind)
    expected = kind.outcomes
    # undecodable rows name the byte offset: checked exactly below, here by prefix
    actual = [
        "undecodable byte" if a.startswith("undecodable byte") and e == "undecodable byte" else a
        for a, e in zip(actual, expected)
    ] + actual[len(expected) :]
    assert actual == expected


def test_every_raw_row_is_reconciled(suite):
    work = suite["work"]
    recon = {
        r[0]: r[1:]
        for r in query(
            work, "select source, raw_rows, clean_rows, quarantined_rows, duplicate_rows from audit.data_reconciliation"
        )
    }
    for source in HEADERS:
        kinds = [k for k in BASE + KINDS if k.source == source]
        expected = [o for k in kinds for o in k.outcomes]
        raw, clean, quarantined, duplicates = recon[source]
        assert raw == len(expected) == clean + quarantined + duplicates, source
        assert clean == expected.count(CLEAN) and duplicates == expected.count(DUPLICATE), source
        assert query(work, f"select count(*) from quarantine.quarantine_{source}")[0][0] == quarantined


def test_undecodable_bytes_name_the_byte_offset_and_the_rest_of_the_file_is_read(suite):
    for kind in (k for k in KINDS if k.name in ("undecodable_byte", "latin1_byte_in_title", "consent_undecodable")):
        offset = kind.content.index(BAD_BYTE)
        reasons = [r for r in outcomes_of(suite["work"], kind) if r.startswith("undecodable")]
        assert reasons[0].startswith(
            f"undecodable byte 0xE9 at byte {offset} of the file (utf-8: invalid continuation byte)"
        ), reasons
    assert query(suite["work"], "select title from staging.stg_products where product_id = 'P10'") == [("Spoon",)]


def test_lenient_values_are_normalised(suite):
    work = suite["work"]
    events = dict(
        query(
            work,
            "select event_id, cast(event_ts as varchar) from staging.stg_events where event_id in ('e-iso1', 'e-iso2')",
        )
    )
    assert events == {"e-iso1": "2026-03-09 16:55:33", "e-iso2": "2026-03-09 22:00:00"}  # offsets -> UTC
    assert query(
        work,
        "select event_type from staging.stg_events where event_id in ('e-up1', 'e-up2', 'e-syn') order by event_id",
    ) == [("cart",), ("view",), ("purchase",)]
    # 09:30 in Paris (UTC+1 in March) is 08:30 UTC; '2.0' is the integer id 2
    assert query(
        work, "select order_id, user_id, cast(order_ts as varchar), is_return from staging.stg_orders order by order_id"
    ) == [
        ("Co1", "1", "2026-03-10 09:00:00", True),
        ("o1", "1", "2026-03-10 08:30:00", False),
        ("o2", "2", "2026-03-10 10:00:00", False),
    ]
    assert query(work, "select cast(impression_ts as varchar), clicked from staging.stg_impressions order by 1, 2") == [
        ("2026-03-09 12:00:00", 0),
        ("2026-03-09 12:00:00", 1),
    ]
    assert query(work, "select title from staging.stg_products where product_id = 'P11'") == [
        ("Two-line\ntitle, with comma",)
    ]
    assert query(work, "select channel from staging.stg_campaigns where campaign_id = 'c6'") == [("email",)]
    assert query(work, "select country from staging.stg_users where user_id = '202'") == [("GB",)]


def test_ids_of_any_shape_get_small_stable_keys(suite, tmp_path):
    work = suite["work"]
    keys = dict(query(work, "select user_id, user_key from marts.user_keys"))
    assert keys["5000000000"] < 2**31 and max(keys.values()) == len(keys)
    assert "85123A" in dict(query(work, "select product_id, product_key from marts.product_keys"))
    # the 5e9 user made it to the ALS input on a small key
    assert query(work, "select count(*) from marts.interactions where user_id = ?", [keys["5000000000"]]) == [(1,)]

    # publishing puts the original ids back, typed by the mapping (integer -> BIGINT, string -> VARCHAR)
    import duckdb

    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    exports = {}
    for table in ("user_keys", "product_keys", "interactions"):
        exports[table] = tmp_path / f"{table}.parquet"
        con.execute(f"COPY marts.{table} TO '{exports[table]}' (FORMAT parquet)")
    con.close()
    restored = restore_original_ids(
        "interactions",
        exports["interactions"],
        {"user": exports["user_keys"], "product": exports["product_keys"]},
        suite["mapping"].ids,
        tmp_path / "published" / "interactions.parquet",
    )
    published = duckdb.sql(f"select user_id, product_id from read_parquet('{restored}')")
    assert [str(t) for t in published.types] == ["BIGINT", "VARCHAR"]
    assert (5000000000, "P2") in published.fetchall()

    orphan = tmp_path / "orphan.parquet"
    duckdb.sql(f"COPY (select 999999 as user_id, 1 as score) TO '{orphan}' (FORMAT parquet)")
    with pytest.raises(
        PublishError, match="1 row\\(s\\) have a user_id that is not a key of user_keys \\(e.g. 999999\\)"
    ):
        restore_original_ids(
            "scores",
            orphan,
            {"user": exports["user_keys"]},
            suite["mapping"].ids,
            tmp_path / "published" / "scores.parquet",
        )


def test_a_broken_opt_out_never_releases_a_user(suite):
    work = suite["work"]
    keys = dict(query(work, "select cast(user_id as bigint), user_key from marts.user_keys"))
    suppressed = {}
    for user_key, channel in query(work, "select user_id, channel from marts.suppressions"):
        suppressed.setdefault(user_key, set()).add(channel)
    assert {user: suppressed.get(keys[user], set()) for user in FAIL_SAFE_USERS} == SUPPRESSED
    # nobody of them is a scoring candidate (the audiences' input) on a suppressed channel
    candidates = query(
        work,
        "select user_id, channel from marts.ctr_score where user_id in ({})".format(
            ", ".join(str(keys[u]) for u in FAIL_SAFE_USERS)
        ),
    )
    key_to_user = {key: user for user, key in keys.items()}
    for user_key, channel in candidates:
        channels = SUPPRESSED[key_to_user[user_key]]
        assert "all" not in channels and channel not in channels, (key_to_user[user_key], channel)
    # the users without a broken row stay contactable
    assert {c for u, c in query(work, f"select user_id, channel from marts.ctr_score where user_id = {keys[1]}")} == {
        "email",
        "push",
        "onsite",
    }


def test_an_all_invalid_day_stops_the_run_on_the_quarantine_share(suite):
    work = suite["work"]
    recon = query(work, "select source, delivered, ds_raw_rows, ds_quarantined_rows from audit.data_reconciliation")
    rows = [dict(zip(("source", "delivered", "ds_raw_rows", "ds_quarantined_rows"), r)) for r in recon]
    with pytest.raises(QuarantineShareError) as failure:
        check_quarantine_share(
            rows,
            limits={"users": 0.5, "products": 0.5, "orders": 0.9, "consent": 0.9, "campaigns": 0.5, "events": 0.9},
            default_limit=0.05,
            min_rows=1,
            reasons={"impressions": [("invalid placement", 3)]},
            ds=DS,
        )
    message = str(failure.value)
    assert (
        "source 'impressions': 3 of 3 rows of the ds=2026-03-10 delivery quarantined (100.0%), above "
        "max_quarantine_share 5.0%; most frequent reasons: invalid placement (3)"
    ) in message
    assert message.count("source '") == 1
    # the same delivery below quarantine_min_rows is not stopped on its share alone: one bad row never stops a night
    assert check_quarantine_share(rows, limits={}, default_limit=1.0, min_rows=4)["impressions"]["checked"] is False


# ---- file-level kinds: they stop the run at the ingest step, naming the place


@dataclass
class FileKind:
    name: str
    prepare: object  # function(raw_root) that breaks the clean zone
    message: str  # a part of the RawContractError that names the place


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


FILE_LEVEL_KINDS = [
    FileKind(
        "empty_file",
        lambda raw: _write(raw / f"events/ds={DS}/events.csv", b""),
        f"events/ds={DS}/events.csv: file is empty (0 bytes)",
    ),
    FileKind(
        "wrong_delimiter",
        lambda raw: _write(raw / f"events/ds={DS}/events.csv", rows("events").replace(b",", b";")),
        f"events/ds={DS}/events.csv: the header has one column",
    ),
    FileKind(
        "missing_required_column",
        lambda raw: _write(raw / f"orders/ds={DS}/orders.csv", b"Invoice,user_id,product_id,quantity,order_ts\n"),
        f"orders/ds={DS}/orders.csv: missing required column 'unit_price'",
    ),
    FileKind(
        "missing_renamed_column",
        lambda raw: _write(
            raw / f"orders/ds={DS}/orders.csv", b"order_id,user_id,product_id,quantity,unit_price,order_ts\n"
        ),
        "missing required column 'order_id' (the mapping reads it from header 'Invoice')",
    ),
    FileKind(
        "late_delivery",
        lambda raw: shutil.rmtree(raw / f"users/ds={DS}") or _write(raw / f"users/ds={DAY2}/users.csv", rows("users")),
        f"users/ds={DS}/: missing partition",
    ),
    FileKind(
        "no_file_matching",
        lambda raw: (raw / f"consent/ds={DS}/base_consent.csv").rename(raw / f"consent/ds={DS}/consent.txt"),
        f"consent/ds={DS}/: no landing file matching *.csv or *.csv.gz",
    ),
    FileKind(
        "truncated_gzip",
        lambda raw: _write(
            raw / f"events/ds={DS}/more.csv.gz", gzip.compress(rows("events", "e,1,P1,view,2026-03-10 09:00:00,s"))[:25]
        ),
        f"events/ds={DS}/more.csv.gz: cannot be read",
    ),
    FileKind(
        "column_twice",
        lambda raw: _write(raw / f"events/ds={DS}/events.csv", rows("events", header=HEADERS["events"] + ",USER_ID")),
        f"events/ds={DS}/events.csv: column 'user_id' appears 2 times in the header",
    ),
    FileKind(
        "no_behaviour_source",
        lambda raw: shutil.rmtree(raw / "events") or shutil.rmtree(raw / "orders"),
        "no behaviour source delivered: the run needs events or orders",
    ),
]


@pytest.fixture
def clean_zone(tmp_path):
    kinds = BASE + [k for k in KINDS if k.name in ("custom_format_and_time_zone", "iso_8601_with_offset")]
    raw = write_zone(tmp_path, kinds)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    return raw, load_mapping(tmp_path / "mapping.yaml")


@pytest.mark.parametrize("kind", FILE_LEVEL_KINDS, ids=lambda kind: kind.name)
def test_file_level_problems_stop_the_run_naming_the_place(clean_zone, tmp_path, kind):
    raw, mapping = clean_zone
    land_window(raw, tmp_path / "landed", DS, HISTORY, mapping)  # the clean zone lands
    kind.prepare(raw)
    with pytest.raises(RawContractError) as failure:
        land_window(raw, tmp_path / "landed", DS, HISTORY, mapping)
    assert kind.message in str(failure.value)


def test_a_broken_mapping_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "sources:\n  orders:\n    columns: {order_no: Invoice}\n    encoding: klingon\n"
        "    timestamps: {timezone: Mars/Olympus}\n  clicks: {}\n"
    )
    with pytest.raises(MappingError) as failure:
        load_mapping(path)
    message = str(failure.value)
    assert f"mapping file {path} is invalid" in message
    assert "sources: unknown source(s) ['clicks']" in message
    path.write_text(
        "sources:\n  orders:\n    columns: {order_no: Invoice}\n    encoding: klingon\n"
        "    timestamps: {timezone: Mars/Olympus}\n"
    )
    message = str(pytest.raises(MappingError, load_mapping, path).value)
    assert "sources.orders.encoding: unknown encoding 'klingon'" in message
    assert "sources.orders.timestamps.timezone: unknown time zone 'Mars/Olympus'" in message
    path.write_text("sources:\n  orders:\n    columns: {order_no: Invoice}\n")
    assert "columns: ['order_no'] not columns of source 'orders'" in str(
        pytest.raises(MappingError, load_mapping, path).value
    )


def test_a_landed_partition_is_reused_until_its_files_or_the_mapping_change(clean_zone, tmp_path):
    raw, mapping = clean_zone
    first = land_window(raw, tmp_path / "landed", DS, HISTORY, mapping)
    again = land_window(raw, tmp_path / "landed", DS, HISTORY, mapping)
    cached = {s["source"]: s["partitions_cached"] for s in again["sources"]}
    assert cached["events"] == 2 and all(s["partitions_cached"] == 0 for s in first["sources"])
    with (raw / f"events/ds={DS}/iso_8601_with_offset.csv").open("ab") as handle:
        handle.write(b"e-new,2,P1,view,2026-03-10 10:00:00,s\n")
    changed = {s["source"]: s for s in land_window(raw, tmp_path / "landed", DS, HISTORY, mapping)["sources"]}
    assert changed["events"]["partitions_cached"] == 1 and changed["events"]["rows_ds"] == 3
    # a partition removed from the raw zone is removed from the landed zone too
    shutil.rmtree(raw / f"events/ds={DAY1}")
    land_window(raw, tmp_path / "landed", DS, HISTORY, mapping)
    assert not (tmp_path / "landed" / "events" / f"ds={DAY1}").exists()


def test_the_user_quarantine_holds_no_raw_email(suite):
    """The quarantine leaves the warehouse (lake, pm query): a rejected user's e-mail only as its hash."""
    work = suite["work"]
    columns = [name for name, *_ in query(work, "describe quarantine.quarantine_users")]
    assert "email" not in columns and "email_sha256" in columns, columns
    [(digest,)] = query(work, "select email_sha256 from quarantine.quarantine_users where user_id = '201'")
    assert digest == hashlib.sha256(b"a@x.com").hexdigest()
