#!/usr/bin/env python3
"""Checks Go templates translated from Jinja chat templates (src/modelfile/translate.rs).

Input: a JSON list of {"name", "jinja" (path), "template" (Go template, or null),
"error" (why it was not translated), "writes_bos", "eos_token"}. Every conversation of
conversations.json is rendered by the Jinja template with jinja2 in transformers'
environment (driver.jinja_environment) and, for translated templates, by the Go template
through ollama_render.go; the two must be equal byte for byte (after BOS, which Ollama's
runtime adds). A conversation the Jinja template rejects is not compared.

Output (--json): one row per (template, conversation) with status "equal", "DIFFERENT",
"jinja-rejects" or "untranslated", and a summary on stdout. Exit status 0: the caller
decides what share is required.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import driver  # noqa: E402

BOS = "<BOS>"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("translations")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    items = json.loads(Path(args.translations).read_text(encoding="utf-8"))
    conv_file = json.loads((HERE / "conversations.json").read_text(encoding="utf-8"))
    env = driver.jinja_environment()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        go = driver.GoRenderer(tmp)
        try:
            for it in items:
                try:
                    tmpl = env.from_string(Path(it["jinja"]).read_text(encoding="utf-8"))
                except Exception as e:  # noqa: BLE001 - a template jinja2 cannot compile
                    rows.append({"template": it["name"], "conversation": "*", "status": "jinja-rejects", "detail": str(e)})
                    continue
                for conv in conv_file["conversations"]:
                    row = {"template": it["name"], "conversation": conv["name"]}
                    tools = conv_file["tools"] if conv.get("tools") else None
                    try:
                        want = tmpl.render(
                            messages=driver.jinja_messages(conv["messages"]),
                            tools=tools,
                            add_generation_prompt=True,
                            bos_token=BOS,
                            eos_token=it["eos_token"],
                        )
                    except Exception as e:  # noqa: BLE001 - raise_exception or a template error
                        row["status"] = "jinja-rejects"
                        row["detail"] = str(e)[:200]
                        rows.append(row)
                        continue
                    if it.get("template") is None:
                        row["status"] = "untranslated"
                        row["detail"] = it.get("error")
                        rows.append(row)
                        continue
                    try:
                        got = go.render(template=it["template"], system="", messages=conv["messages"], tools=tools,
                                        date=driver.FIXED_DATE.isoformat())
                    except RuntimeError as e:
                        row["status"] = "DIFFERENT"
                        row["detail"] = str(e)[:300]
                        rows.append(row)
                        continue
                    if it.get("writes_bos") and want.startswith(BOS):
                        got = BOS + got
                    if got == want:
                        row["status"] = "equal"
                    else:
                        row["status"] = "DIFFERENT"
                        k = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
                        row["detail"] = {"at": k, "jinja": want[max(0, k - 40):k + 60], "go": got[max(0, k - 40):k + 60]}
                    rows.append(row)
        finally:
            go.close()
    Path(args.json).write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    per = {}
    for r in rows:
        s = per.setdefault(r["template"], {})
        s[r["status"]] = s.get(r["status"], 0) + 1
    for name, counts in sorted(per.items()):
        print(f"{name:60} " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
