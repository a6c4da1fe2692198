"""The fast pass against the careful reference, on edge cases, generated files and hostile mutations.

Every file goes through `validate_both` (tests/validation_support.py): both passes must give the
same verdict, rows, columns, issues (code, severity, line, column, message), counts and output.
Small chunk sizes move the block edges (and so the place where the fast pass hands over to the
careful one) across the file; small repeat buffers make the duplicate search spill and merge runs.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from bot.schema import Column, ColumnType, TableSchema
from bot.validation import ValidationOptions
from bot.validation.dedupe import RepeatFinder
from bot.validation.fastpath import analyze_block, skeleton_table
from tests.validation_support import validate_both

BP2 = TableSchema(kind="bigpanda", columns=(Column("a"), Column("b")))
BP3 = TableSchema(kind="bigpanda", columns=(Column("a"), Column("b"), Column("c")))
BP1 = TableSchema(kind="bigpanda", columns=(Column("a"),))
DG_KEY = TableSchema(
    kind="dengage",
    columns=(
        Column("a", primary=True, nullable=False),
        Column("b", type=ColumnType.INTEGER),
        Column("c", type=ColumnType.DATE),
    ),
    table_name="t",
)
DG_TEXT = TableSchema(kind="dengage", columns=(Column("a"), Column("b"), Column("c")), table_name="t")
SCHEMAS = {"bp1": BP1, "bp2": BP2, "bp3": BP3, "dg_key": DG_KEY, "dg_text": DG_TEXT}

EDGE_CASES = [
    b'a,b\n1,2\n"1",2\n1,"2"\n"1","2"\n',  # needless quotes: the same row four times
    b'a,b\n"x,y",1\nx,"y,1"\n"x,y","1"\n',  # a comma inside quotes is not a separator
    b'a,b\n"say ""hi""",1\n"say ""hi""",1\n""" """,2\n"",3\n,4\n',  # doubled quotes, empty quoted values
    b'a,b\n1,"two\nlines"\n3,4\n1,"two\nlines"\n',  # a value spanning lines
    b"a,b\n1,2\n\n3,4\n",  # a blank line
    b"a,b\n1,2,3\n4\n5,6\n",  # field counts
    b'a,b\n1,x"y\n2,"z"w\n3,4\n',  # a quote inside a value; text after a closing quote
    b'a,b\n1,"open\n2,3\n',  # a quote never closed
    b"a,b\r\n1,2\r\n1,2\r\n",  # CRLF and a duplicate
    b"\xef\xbb\xbfa,b\n1,2\n",  # BOM
    b"a,b\n1,caf\xe9\n2,\xed\xa0\x80\n1,caf\xe9\n",  # invalid UTF-8, repeated
    b'"a","b"\n1,2\n',  # a quoted header
    b'a,"b\nc"\n1,2\n',  # a header spanning lines
    b"a,b\n",  # no data rows
    b"a;b\n1;2\n1;2\n",  # semicolons
    b'a\n""\n""\n"x"\nx\n',  # one column: an empty value is written "" (and differs from a blank line)
    b"a,b\n1,2\n3,4",  # no final newline
    b"a,b\n1,2\n\n\n",  # trailing blank lines
    b"a,b,c\n1,2,2024-02-30\n1,x,2024-01-01\n2,3,\n",  # D·engage types and a repeated key
    b'a,b,c\n"",1,2\n , 1 ,2\n',  # blank keys
]


@pytest.mark.parametrize("schema", list(SCHEMAS), ids=str)
@pytest.mark.parametrize("case", range(len(EDGE_CASES)))
@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_edge_cases_agree(schema: str, case: int, chunk: int) -> None:
    validate_both(EDGE_CASES[case], SCHEMAS[schema], ValidationOptions(chunk_size=chunk, dedupe_buffer_rows=2))


SPECTRUM = Path(__file__).resolve().parent.parent / "node_modules" / "csv-spectrum" / "csvs"


@pytest.mark.parametrize("path", sorted(SPECTRUM.glob("*.csv")) if SPECTRUM.is_dir() else [], ids=lambda p: p.stem)
def test_csv_spectrum_agrees(path: Path) -> None:
    data = path.read_bytes()
    titles = data.split(b"\n", 1)[0].decode().strip().split(",")
    schema = TableSchema(kind="dengage", columns=tuple(Column(t.strip('"')) for t in titles), table_name="t")
    validate_both(data, schema)
    validate_both(data, TableSchema(kind="bigpanda", columns=schema.columns))


VALUES = [
    "x",
    "y",
    "",
    " ",
    "1",
    "42",
    "Zürich",
    "a,b",
    'say "hi"',
    "two\nlines",
    "é",
    "2024-01-31",
    "-7",
    "semi;colon",
]


def _value(rng: random.Random, delimiter: str) -> str:
    value = rng.choice(VALUES) if rng.random() < 0.8 else f"v{rng.randrange(50)}"
    needs = delimiter in value or '"' in value or "\n" in value
    if needs or rng.random() < 0.2:  # quoted where needed, and sometimes where not
        return '"' + value.replace('"', '""') + '"'
    return value


def generated_file(rng: random.Random, columns: int, delimiter: str = ",", rows: int = 300) -> bytes:
    header = delimiter.join("abc"[i] for i in range(columns))
    lines = [header]
    for _ in range(rows):
        if lines[1:] and rng.random() < 0.15:  # a repeat, quoted anew
            lines.append(rng.choice(lines[1:]))
            continue
        width = columns if rng.random() < 0.97 else rng.choice([columns - 1, columns + 1])
        lines.append(delimiter.join(_value(rng, delimiter) for _ in range(max(1, width))))
        if rng.random() < 0.01:
            lines.append("")
    text = "\n".join(lines) + ("\n" if rng.random() < 0.9 else "")
    if rng.random() < 0.2:
        text = text.replace("\n", "\r\n")
    return text.encode("utf-8")


@pytest.mark.parametrize("seed", range(60))
def test_generated_files_agree(seed: int) -> None:
    rng = random.Random(seed)
    name = rng.choice(list(SCHEMAS))
    schema = SCHEMAS[name]
    columns = len(schema.columns)
    delimiter = ";" if schema.kind == "dengage" and rng.random() < 0.3 else ","
    data = generated_file(rng, columns, delimiter)
    options = ValidationOptions(
        chunk_size=rng.choice([16, 100, 1000, 1 << 20]),
        dedupe_buffer_rows=rng.choice([2, 7, 64, 1 << 18]),
        max_issues=rng.choice([3, 1000]),
    )
    validate_both(data, schema, options)


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        at = rng.randrange(len(out))
        kind = rng.random()
        if kind < 0.5:
            out[at:at] = rng.choice([b'"', b"\n", b"\r", b",", b";", b"\xff", b"\xc3", b'""', b"\x00"])
        elif kind < 0.8:
            del out[at : at + rng.randrange(1, 4)]
        else:
            out[at] = rng.randrange(256)
    return bytes(out)


@pytest.mark.parametrize("seed", range(80))
def test_hostile_mutations_agree(seed: int) -> None:
    rng = random.Random(1000 + seed)
    schema = SCHEMAS[rng.choice(list(SCHEMAS))]
    base = generated_file(rng, len(schema.columns), rows=80)
    # the NUL byte check starts after the first 64 KiB sniff: pad some files past it
    prefix = b"" if rng.random() < 0.7 else base.split(b"\n", 1)[0] + b"\n" + b"p,q,r\n" * 15_000
    data = prefix + base.split(b"\n", 1)[1] if prefix else base
    validate_both(mutate(rng, data), schema, ValidationOptions(chunk_size=rng.choice([50, 4096]), dedupe_buffer_rows=5))


def test_a_large_clean_file_agrees_across_many_blocks() -> None:
    rng = random.Random(7)
    rows = []
    for i in range(40_000):
        j = i % 30_000  # rows 30,000 and on repeat the first 10,000
        description = f'"Rack {j % 40}, row {j % 7}, Zürich"' if j % 4 == 0 else f"rack {j % 40}"
        rows.append(f"host-{j},{description},svc-{j % 9}\n")
    rng.shuffle(rows)
    data = ("a,b,c\n" + "".join(rows)).encode()
    report, _ = validate_both(data, BP3, ValidationOptions(chunk_size=1 << 14, dedupe_buffer_rows=1000))
    assert report.issue_counts == {"duplicate_row": 10_000}


def test_the_fast_pass_proves_typical_blocks_regular() -> None:
    # Without this, the differential tests could pass with a fast pass that never runs.
    delete = skeleton_table(",")
    block = b'h1,"Rack 1, row 2, Z\xc3\xbcrich",x\nh2,rack,"say ""hi"""\nh3,"plain",\n'
    shape = analyze_block(block, ",", 3, delete)
    assert shape is not None and shape.records == 3
    assert shape.canonical == block.replace(b'"plain"', b"plain")  # quotes without need go
    for irregular in (b"a,b\n", b"a,b,c\n\n", b'a,"b\nc",d\n', b'a,x"y,c\n', b'a,"b"c,d\n', b"a,b,c"):
        assert analyze_block(irregular, ",", 3, delete) is None


def test_repeat_finder_spilling_to_disk_matches_a_dictionary() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(-(2**63), 2**63 - 1, 5000, dtype=np.int64)
    values[rng.integers(0, 5000, 3000)] = values[rng.integers(0, 5000, 3000)]  # many repeats
    values[:7] = 0  # and one value seven times over
    found: list[tuple[np.ndarray, np.ndarray, int]] = []
    finder = RepeatFinder(
        lambda lines, previous, count: found.append((lines, previous, count)), buffer_rows=97, keep=10**6
    )
    for start in range(0, 5000, 333):
        finder.add_range(values[start : start + 333], 10 + start)
    finder.finish()
    last: dict[int, int] = {}
    expected = set()
    for i, value in enumerate(values.tolist()):
        if value in last:
            expected.add((10 + i, last[value]))
        last[value] = 10 + i
    got = {(int(a), int(b)) for lines, previous, _ in found for a, b in zip(lines, previous, strict=True)}
    assert got == expected
    assert sum(count for _, _, count in found) == len(expected)


@pytest.mark.parametrize("schema", ["bp3", "dg_text", "dg_key"])
def test_forked_helpers_agree(schema: str) -> None:
    # the helpers prove blocks and fingerprint lines in other processes; the report must not change
    rng = random.Random(11)
    data = b"".join(generated_file(rng, 3, rows=3000).split(b"\n\n"))  # some blank lines stay
    options = ValidationOptions(workers=2, chunk_size=4096, dedupe_buffer_rows=500)
    validate_both(data, SCHEMAS[schema], options)
    clean = ("a,b,c\n" + "".join(f'h{i},"x, {i % 50}",{i % 7}\n' for i in range(20_000))).encode()
    report, _ = validate_both(clean, SCHEMAS[schema], options)
    assert report.rows == 20_000


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("chunk", [64, 1000, 4096])
def test_a_fatal_error_mid_file_ends_both_passes_at_the_same_row(workers: int, chunk: int) -> None:
    # rows with rule issues, then a NUL byte far into the file: both passes report the rows of
    # every block before the NUL's block, then the fatal error
    rows = b"".join(b"%d,x%d,2024-01-01\n" % (i, i) for i in range(4000))
    data = b"a,b,c\n" + rows + b'7,"open\n' + rows[:2000] + b"\x00" + rows
    report, _ = validate_both(data, DG_KEY, ValidationOptions(chunk_size=chunk, workers=workers))
    assert report.issues[-1].code == "binary_file" or "binary_file" in report.issue_counts
    assert report.issue_counts["invalid_integer"] > 0


@pytest.mark.parametrize("crlf", [False, True])
def test_forked_helpers_check_utf8_as_the_careful_pass_does(crlf: bool) -> None:
    # the helpers check the UTF-8 of blocks whose text nobody needs; a bad block is decoded here,
    # naming each bad sequence by line and byte as the careful pass does
    rows = [f"h{i},v{i % 13},w\n".encode() for i in range(30_000)]
    for i in (5, 9_000, 9_001, 22_222):
        rows[i] = b"h%d,caf\xe9,\xed\xa0\x80\n" % i
    rows.insert(25_000, b'x,"broken"quote,y\n')  # and later the careful pass takes over
    data = b"a,b,c\n" + b"".join(rows)
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    report, _ = validate_both(data, BP3, ValidationOptions(workers=2, chunk_size=4096))
    assert report.issue_counts["invalid_utf8"] == 8 and report.issue_counts["bad_quoting"] == 1


@pytest.mark.parametrize("seed", range(12))
def test_hostile_mutations_agree_with_forked_helpers(seed: int) -> None:
    rng = random.Random(5000 + seed)
    base = generated_file(rng, 3, rows=3000)
    validate_both(mutate(rng, base), BP3, ValidationOptions(workers=2, chunk_size=2048, dedupe_buffer_rows=300))
