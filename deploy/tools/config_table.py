#!/usr/bin/env python3
"""deploy/tools/config_table.py — the configuration key table of README.md, generated
from common/mdb_config_keys.def (the schema every binary loads).

    /usr/bin/python3 deploy/tools/config_table.py           print the Markdown table
    /usr/bin/python3 deploy/tools/config_table.py --write   replace the table in README.md
    /usr/bin/python3 deploy/tools/config_table.py --check   exit 1 if README.md is stale

The table sits between the lines '<!-- config-keys:begin -->' and
'<!-- config-keys:end -->' of README.md.
"""
import os
import re
import sys

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEF = os.path.join(SRC, "common", "mdb_config_keys.def")
README = os.path.join(SRC, "README.md")
BEGIN = "<!-- config-keys:begin -->"
END = "<!-- config-keys:end -->"

KEY_RE = re.compile(r'^MDB_CONFIG_KEY\(\s*"([^"]+)"\s*,\s*(\w+)\s*,\s*"((?:[^"\\]|\\.)*)"\s*,\s*"((?:[^"\\]|\\.)*)"\s*\)')
SECTION_RE = re.compile(r"^/\*\s*(.+?)\s*\*/\s*$")


def cell(s):
    return s.replace("|", "\\|").replace("\n", " ")


def table():
    rows = ["| key | environment | type | default | meaning |", "|---|---|---|---|---|"]
    section = None
    with open(DEF, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            m = SECTION_RE.match(line)
            if m and "MDB_CONFIG_KEY(" not in m.group(1):
                section = m.group(1)
                continue
            m = KEY_RE.match(line)
            if not m:
                continue
            name, typ, default, help_ = m.groups()
            kind = typ.lower()
            if typ == "ENUM":
                parts = default.split("|")
                default, kind = parts[0], "one of " + ", ".join(parts[1:])
            env = "METADB_" + name.upper().replace(".", "_")
            shown = "`%s`" % default if default else "(empty)"
            meaning = help_.replace('\\"', '"')
            if section:
                meaning = "%s: %s" % (section, meaning)
            rows.append("| `%s` | `%s` | %s | %s | %s |" % (name, env, cell(kind), cell(shown), cell(meaning)))
    return "\n".join(rows) + "\n"


def splice(text, tbl):
    b, e = text.find(BEGIN), text.find(END)
    if b < 0 or e < b:
        raise SystemExit("README.md lacks the %s ... %s markers" % (BEGIN, END))
    return text[: b + len(BEGIN)] + "\n" + tbl + text[e:]


def main():
    tbl = table()
    if len(sys.argv) == 1:
        sys.stdout.write(tbl)
        return 0
    with open(README, encoding="utf-8") as f:
        text = f.read()
    new = splice(text, tbl)
    if sys.argv[1] == "--write":
        if new != text:
            with open(README, "w", encoding="utf-8") as f:
                f.write(new)
        return 0
    if sys.argv[1] == "--check":
        if new != text:
            print("README.md configuration table is stale: run /usr/bin/python3 deploy/tools/config_table.py --write")
            return 1
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
