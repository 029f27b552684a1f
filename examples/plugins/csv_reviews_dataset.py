"""A dataset of your own as a textvae plugin: `textvae data prepare reviews-csv --from DIR --plugin FILE`.

DIR holds `reviews.csv` with a header `label,text` (quoted as the csv module writes). The builder keeps the rows
with a label and a text, flattens line breaks inside a text, and cuts the file in order: the last 10% of the
rows are the test split, the 10% before them the validation split. The result is a `format: labeled` corpus
(`label<TAB>text` per line) with a manifest.json of sha256 hashes, like any built-in dataset; `textvae probe`
and `transfer` use its labels.
"""

from __future__ import annotations

import csv
import io

from textvae.data.prepare import Output, register
from textvae.errors import TextVAEError

INPUT = "reviews.csv"


@register(
    "reviews-csv",
    "your reviews.csv (label,text) as a labelled corpus: 80/10/10 in file order",
    family="reviews-csv",
    inputs=(INPUT,),
    labelled=True,
    hint="pass --from a folder that holds reviews.csv",
)
def build_reviews(files: dict[str, list[bytes]]) -> dict[str, Output]:
    text = b"".join(files[INPUT]).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"label", "text"} <= set(reader.fieldnames):
        raise TextVAEError(f"{INPUT}: expected a header with the columns label and text, got {reader.fieldnames}")
    rows = [(row["label"].strip(), " ".join(row["text"].split())) for row in reader]
    lines = [f"{label}\t{body}\n".encode() for label, body in rows if label and body and "\t" not in label]
    if len(lines) < 10:
        raise TextVAEError(f"{INPUT}: {len(lines)} usable rows; at least 10 are needed for three splits")
    valid_start, test_start = round(len(lines) * 0.8), round(len(lines) * 0.9)
    return {
        "train.txt": Output(lines[:valid_start], f"{INPUT} rows 1-{valid_start}"),
        "valid.txt": Output(lines[valid_start:test_start], f"{INPUT} rows {valid_start + 1}-{test_start}"),
        "test.txt": Output(lines[test_start:], f"{INPUT} rows {test_start + 1}-{len(lines)}"),
    }
