"""Stable issue codes. Slack messages, the CLI's JSON and tests key on these strings: never rename one.

Whole-file problems (one error, nothing else is checked):
    EMPTY_FILE, UTF16_FILE, BINARY_FILE, HTML_FILE, FILE_TOO_LARGE, LINE_TOO_LONG, MISSING_HEADER
Bytes and structure (both targets):
    INVALID_UTF8, BAD_QUOTING, FIELD_COUNT, BLANK_LINE, NO_DATA_ROWS, DUPLICATE_ROW
Header (both targets):
    EMPTY_HEADER, DUPLICATE_HEADER, NEWLINE_IN_HEADER, MISSING_COLUMN, UNKNOWN_COLUMN
BigPanda: VALUE_TOO_LONG, NEWLINE_IN_VALUE, COLUMN_ORDER (warning), TOO_MANY_RESULT_COLUMNS (warning)
D·engage: FORBIDDEN_TABLE, BAD_COLUMN_MAPPING, MISSING_PRIMARY_KEY, MISSING_VALUE, INVALID_INTEGER,
    INVALID_DECIMAL, INVALID_BOOLEAN, INVALID_DATE, INVALID_EMAIL, REPEATED_KEY (warning)
Repairs (severity `fixed`): BOM_REMOVED, LINE_ENDINGS, FINAL_NEWLINE, TRAILING_BLANK_LINES,
    DUPLICATE_ROW_DROPPED
"""

EMPTY_FILE = "empty_file"
UTF16_FILE = "utf16_file"
BINARY_FILE = "binary_file"
HTML_FILE = "html_file"
FILE_TOO_LARGE = "file_too_large"
LINE_TOO_LONG = "line_too_long"
MISSING_HEADER = "missing_header"

INVALID_UTF8 = "invalid_utf8"
BAD_QUOTING = "bad_quoting"
FIELD_COUNT = "field_count"
BLANK_LINE = "blank_line"
NO_DATA_ROWS = "no_data_rows"
DUPLICATE_ROW = "duplicate_row"

EMPTY_HEADER = "empty_header"
DUPLICATE_HEADER = "duplicate_header"
NEWLINE_IN_HEADER = "newline_in_header"
MISSING_COLUMN = "missing_column"
UNKNOWN_COLUMN = "unknown_column"

VALUE_TOO_LONG = "value_too_long"
NEWLINE_IN_VALUE = "newline_in_value"
COLUMN_ORDER = "column_order"
TOO_MANY_RESULT_COLUMNS = "too_many_result_columns"

FORBIDDEN_TABLE = "forbidden_table"
BAD_COLUMN_MAPPING = "bad_column_mapping"
MISSING_PRIMARY_KEY = "missing_primary_key"
MISSING_VALUE = "missing_value"
INVALID_INTEGER = "invalid_integer"
INVALID_DECIMAL = "invalid_decimal"
INVALID_BOOLEAN = "invalid_boolean"
INVALID_DATE = "invalid_date"
INVALID_EMAIL = "invalid_email"
REPEATED_KEY = "repeated_key"

BOM_REMOVED = "bom_removed"
LINE_ENDINGS = "line_endings"
FINAL_NEWLINE = "final_newline"
TRAILING_BLANK_LINES = "trailing_blank_lines"
DUPLICATE_ROW_DROPPED = "duplicate_row_dropped"
