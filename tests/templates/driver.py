#!/usr/bin/env python3
"""Template-equality test: every Ollama template family in formats/templates/ must render
exactly what the model's own Jinja chat template renders.

For each family (formats/templates/<name>.json + <name>.gotmpl) and each Jinja source it
lists, every conversation in conversations.json that the family supports is rendered

  * by the Jinja source with jinja2, in the environment Hugging Face transformers uses for
    chat templates (trim_blocks, lstrip_blocks, loopcontrols, its tojson, raise_exception,
    strftime_now), with add_generation_prompt=True and the same messages and tools;
  * by the Go template with Go's text/template, through ollama_render.go, which reproduces
    Ollama's data shape, helper functions and message preprocessing (Modelfile SYSTEM
    injection, collate, the .Messages/legacy/suffix paths).

The two strings must be equal byte for byte. The only normalization is the BOS token: Jinja
templates write bos_token as text, while Ollama's runtime adds BOS itself when it tokenizes
(the GGUF says add_bos_token), so a family that declares "bos" must render exactly
bos + <Go output>. Dates are fixed: strftime_now and Ollama's currentDate both return
FIXED_DATE.

A Jinja source that rejects a conversation (raise_exception, e.g. Gemma 2 and system
messages) is reported as "jinja-rejects" and not compared; every family must still compare
every conversation it supports against at least one source. Differences that cannot be
avoided are listed in KNOWN_DIFFERENCES with the reason; a listed difference that no longer
differs fails the run, so the list stays honest.

Usage: driver.py [--ref-src DIR] [--json REPORT] [-v]
  DIR is the llama.cpp source tree printed by scripts/ref-src.sh (its models/templates/
  holds the Jinja sources named "ref:<file>" in the family JSON files).
Go is taken from PATH; if missing it is installed with apt-get (non-interactive), since
no Go module proxy is reachable and the renderer needs only the standard library.
"""

import argparse
import datetime
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FAMILIES_DIR = ROOT / "formats" / "templates"

# A date that is neither Llama 3.1's hard-coded "26 Jul 2024" nor today, so a template that
# ignored the date source would be caught.
FIXED_DATE = datetime.date(2024, 9, 3)

# Differences that cannot be avoided, each shown by one "limit-*" conversation.
# (family, Jinja source or "*", conversation) -> (reason, normalization). A listed pair must
# differ, and must become equal once the normalization undoes exactly the listed cause, so a
# known difference cannot hide another one. A limit conversation that differs for a pair not
# listed here fails.
_TRIM = ("Go templates cannot trim strings and Ollama passes message content unchanged; "
         "this Jinja template applies |trim to message content", "trim-go-input")
_MERGE = ("Ollama's collate() merges consecutive messages of the same role (except tool) into one "
          "message joined by a blank line before the template sees them", "merge-jinja-input")
_ORDER = ("Ollama decodes tool-call arguments into a Go map, so the template can only visit keys "
          "in sorted order; Jinja keeps the order the client sent", "sort-jinja-arguments")
_TRIM_ASSISTANT = ("Go templates cannot trim strings and Ollama passes message content unchanged; "
                   "this Jinja template applies |trim to assistant content", "trim-go-assistant-input")
_LSTRIP_ASSISTANT = ("Go templates cannot trim strings and Ollama passes message content unchanged; "
                     "this Jinja template strips leading newlines from earlier assistant turns "
                     "(what is left after </think>)", "lstrip-newline-go-assistant-input")
KNOWN_DIFFERENCES = {("mistral", "mistral-7b-instruct-v0.3.jinja", "limit-untrimmed-content"): _TRIM_ASSISTANT,
                     ("qwq", "*", "limit-untrimmed-content"): _LSTRIP_ASSISTANT,
                     ("smollm3", "*", "limit-untrimmed-content"): _LSTRIP_ASSISTANT}
for fam, src in [("llama3.1", "*"), ("llama3.2", "*"), ("gemma", "gemma3.jinja"),
                 ("gemma", "ref:google-gemma-2-2b-it.jinja")]:
    KNOWN_DIFFERENCES[(fam, src, "limit-untrimmed-content")] = _TRIM
for fam in ["qwen2.5", "qwen2.5-coder", "llama3.1", "llama3.2", "phi3", "chatml", "phi4", "deepseek-r1",
            "deepseek-r1-llama", "qwq", "qwen3", "smollm3", "hermes3", "granite3.3", "devstral"]:
    KNOWN_DIFFERENCES[(fam, "*", "limit-consecutive-user")] = _MERGE
for fam in ["qwen2.5", "qwen2.5-coder", "llama3.1", "llama3.2", "mistral", "mistral-nemo", "deepseek-r1", "qwq",
            "qwen3", "hermes3", "mistral-small3.2", "devstral", "ministral3"]:
    KNOWN_DIFFERENCES[(fam, "*", "limit-unsorted-arguments")] = _ORDER


def known_difference(family, source, conversation):
    return KNOWN_DIFFERENCES.get((family, source, conversation)) or KNOWN_DIFFERENCES.get(
        (family, "*", conversation)
    )


def normalize(kind, messages):
    """(messages for Jinja, messages for Go) with the cause of a known difference undone."""
    msgs = [dict(m) for m in messages]
    if kind == "trim-go-input":
        return msgs, [dict(m, content=m["content"].strip()) for m in msgs]
    if kind == "trim-go-assistant-input":
        return msgs, [dict(m, content=m["content"].strip()) if m["role"] == "assistant" else m for m in msgs]
    if kind == "lstrip-newline-go-assistant-input":
        return msgs, [dict(m, content=m["content"].lstrip("\n")) if m["role"] == "assistant" else m for m in msgs]
    if kind == "merge-jinja-input":
        merged = []
        for m in msgs:
            if merged and merged[-1]["role"] == m["role"] and m["role"] != "tool":
                merged[-1] = dict(merged[-1], content=merged[-1]["content"] + "\n\n" + m["content"])
            else:
                merged.append(m)
        return merged, msgs
    if kind == "sort-jinja-arguments":
        out = []
        for m in msgs:
            calls = [
                dict(c, function=dict(c["function"], arguments=dict(sorted(c["function"]["arguments"].items()))))
                for c in m.get("tool_calls") or []
            ]
            out.append(dict(m, tool_calls=calls) if calls else m)
        return out, msgs
    raise ValueError(kind)

# Other limits, not exercised because Ollama's data model cannot express them at all
# (documented in formats/modelfile.md):
#   * Tool properties reach the template as Go structs: their fields come out in Ollama's
#     order (type, description, enum) and nested schemas as compact JSON.
#   * Strings are written with printf "%q", which equals Python's json.dumps except for
#     control characters other than \b \f \n \r \t and for non-printable Unicode.


def ensure_go():
    go = shutil.which("go")
    if go:
        return go
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("driver: go not found; installing golang-go with apt-get", file=sys.stderr)
    cmd = ["apt-get", "install", "-y", "-q", "golang-go"]
    if os.geteuid() != 0 and shutil.which("sudo"):
        cmd = ["sudo", "-n"] + cmd
    if subprocess.run(cmd, env=env, stdout=sys.stderr).returncode != 0:
        update = (["sudo", "-n"] if cmd[0] == "sudo" else []) + ["apt-get", "update", "-q"]
        subprocess.run(update, env=env, stdout=sys.stderr, check=True)
        subprocess.run(cmd, env=env, stdout=sys.stderr, check=True)
    go = shutil.which("go") or "/usr/lib/go/bin/go"
    if not Path(go).exists():
        sys.exit("driver: golang-go installed but no go binary found")
    return go


class GoRenderer:
    """Builds ollama_render.go once and keeps it running (one JSON request per line)."""

    def __init__(self, workdir):
        go = ensure_go()
        exe = Path(workdir) / "ollama_render"
        env = dict(os.environ, GO111MODULE="off", GOFLAGS="", GOPROXY="off", CGO_ENABLED="0")
        env.setdefault("GOCACHE", str(Path(workdir) / "gocache"))
        subprocess.run([go, "build", "-o", str(exe), str(HERE / "ollama_render.go")], env=env, check=True)
        self.proc = subprocess.Popen(
            [str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
        )

    def render(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("ollama_render exited")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError("Go template error: " + answer["error"])
        return answer["output"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def jinja_environment():
    """The environment transformers' apply_chat_template compiles chat templates in."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.combine(FIXED_DATE, datetime.time(12, 0)).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def jinja_messages(messages):
    """Messages as transformers receives them: no tool_calls key unless there are calls."""
    out = []
    for m in messages:
        m = dict(m)
        if not m.get("tool_calls"):
            m.pop("tool_calls", None)
        out.append(m)
    return out


def load_source(spec, ref_src):
    """The Jinja text: "ref:<file>" is llama.cpp's models/templates/<file>; "gguf:<file>" is
    the tokenizer.chat_template of llama.cpp's models/<file> (a real GGUF written by
    llama.cpp's tools); anything else is a file in formats/templates."""
    if spec.startswith("ref:"):
        return (Path(ref_src) / "models" / "templates" / spec[4:]).read_text(encoding="utf-8")
    if spec.startswith("gguf:"):
        import gguf

        reader = gguf.GGUFReader(str(Path(ref_src) / "models" / spec[5:]))
        field = reader.fields["tokenizer.chat_template"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return (FAMILIES_DIR / spec).read_text(encoding="utf-8")


def default_system(fam, text):
    """The SYSTEM ggufkit writes for this Jinja text (as src/modelfile/families.rs does)."""
    if fam.get("system_regex"):
        m = re.search(fam["system_regex"], text)
        if m:
            return m.group("system").replace("\\n", "\n")
    sys_default = fam.get("system")
    return sys_default if sys_default and sys_default in text else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-src", help="llama.cpp source tree (scripts/ref-src.sh)")
    ap.add_argument("--json", help="write a JSON report here")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument(
        "--smoke-templates",
        help="JSON list of {name, template}: Go templates without a Jinja reference (ggufkit's fallbacks); "
        "each must execute without error, as Ollama would run it, on every non-tool conversation",
    )
    args = ap.parse_args()
    ref_src = args.ref_src or subprocess.run(
        [str(ROOT / "scripts" / "ref-src.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()

    conv_file = json.loads((HERE / "conversations.json").read_text(encoding="utf-8"))
    tools = conv_file["tools"]
    conversations = conv_file["conversations"]
    env = jinja_environment()

    failures = []
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        go = GoRenderer(tmp)
        try:
            for fam_path in sorted(FAMILIES_DIR.glob("*.json")):
                fam = json.loads(fam_path.read_text(encoding="utf-8"))
                name = fam["name"]
                gotmpl = (FAMILIES_DIR / fam["template"]).read_text(encoding="utf-8")
                # The file's final newline ends the file, not the template (formats/modelfile.md).
                if gotmpl.endswith("\n"):
                    gotmpl = gotmpl[:-1]
                caps = set(fam.get("capabilities", []))
                compared = {}
                rejected = set()
                for src in fam["jinja"]:
                    text = load_source(src["source"], ref_src)
                    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
                    if src.get("sha256") and src["sha256"] != digest:
                        failures.append(f"{name}: {src['source']} sha256 {digest} != {src['sha256']} in {fam_path.name}")
                        continue
                    tmpl = env.from_string(text)
                    system = default_system(fam, text)
                    bos = src.get("bos", fam.get("bos")) or ""
                    for conv in conversations:
                        cname = conv["name"]
                        missing = [n for n in conv.get("needs", []) if n not in caps or n in src.get("lacks", [])]
                        row = {"family": name, "source": src["source"], "conversation": cname}
                        if missing:
                            row["status"] = "unsupported:" + ",".join(missing)
                            report.append(row)
                            continue
                        conv_tools = tools if conv.get("tools") else None
                        try:
                            want = tmpl.render(
                                messages=jinja_messages(conv["messages"]),
                                tools=conv_tools,
                                add_generation_prompt=True,
                                bos_token=src.get("bos_token", fam.get("bos_token", "")),
                                eos_token=fam.get("eos_token", ""),
                            )
                        except (jinja2.exceptions.TemplateError, TypeError) as e:
                            # raise_exception, or a template that cannot run on this input at all
                            # (e.g. Hermes-3's tool-use template iterates tools=None).
                            rejected.add(cname)
                            row["status"] = "jinja-rejects"
                            row["detail"] = str(e)
                            report.append(row)
                            continue
                        got = go.render(
                            template=gotmpl,
                            system=system,
                            messages=conv["messages"],
                            tools=conv_tools,
                            date=FIXED_DATE.isoformat(),
                        )
                        got_full = bos + got
                        key = (name, src["source"], cname)
                        reason = known_difference(*key)
                        if got_full == want:
                            if reason:
                                failures.append(f"{key}: listed as a known difference but renders equal")
                            row["status"] = "equal"
                            row["bytes"] = len(want.encode("utf-8"))
                            compared.setdefault(cname, 0)
                            compared[cname] += 1
                        elif reason:
                            # The difference must be exactly the listed one.
                            j_msgs, g_msgs = normalize(reason[1], conv["messages"])
                            want_n = tmpl.render(
                                messages=jinja_messages(j_msgs),
                                tools=conv_tools,
                                add_generation_prompt=True,
                                bos_token=src.get("bos_token", fam.get("bos_token", "")),
                                eos_token=fam.get("eos_token", ""),
                            )
                            got_n = bos + go.render(
                                template=gotmpl, system=system, messages=g_msgs, tools=conv_tools,
                                date=FIXED_DATE.isoformat(),
                            )
                            if want_n == got_n:
                                row["status"] = "known-difference"
                                row["detail"] = reason[0]
                            else:
                                row["status"] = "DIFFERENT"
                                failures.append(f"{name} / {src['source']} / {cname}: differs by more than: {reason[0]}")
                        else:
                            row["status"] = "DIFFERENT"
                            diff = "".join(
                                difflib.unified_diff(
                                    want.splitlines(True), got_full.splitlines(True), "jinja", "ollama-go"
                                )
                            )
                            failures.append(f"{name} / {src['source']} / {cname}:\n{diff}")
                        report.append(row)
                # Every supported conversation must be compared against at least one source.
                for conv in conversations:
                    if (not conv.get("limit") and all(n in caps for n in conv.get("needs", []))
                            and conv["name"] not in compared and conv["name"] not in rejected):
                        failures.append(f"{name}: conversation {conv['name']} compared against no Jinja source")
                # The tag Ollama's tool-call parser derives from the template must be what the
                # model writes before a call (family JSON "tool_call_tag").
                if "tools" in caps:
                    tag = go.render(template=gotmpl, mode="tooltag")
                    row = {"family": name, "source": "ollama-tool-tag", "conversation": "tool-call-tag"}
                    if tag == fam.get("tool_call_tag"):
                        row["status"] = "equal"
                    else:
                        row["status"] = "DIFFERENT"
                        failures.append(f"{name}: Ollama would look for tool calls after {tag!r}, want {fam.get('tool_call_tag')!r}")
                    report.append(row)
                # Fill-in-the-middle: Ollama's generate request with a suffix.
                for fim in fam.get("fim_checks", []):
                    got = go.render(template=gotmpl, system=fam.get("system") or "", messages=[],
                                    prompt=fim["prompt"], suffix=fim["suffix"], date=FIXED_DATE.isoformat())
                    row = {"family": name, "source": "fim-format", "conversation": "fim:" + fim["prompt"][:20]}
                    if got == fim["expected"]:
                        row["status"] = "equal"
                        row["bytes"] = len(got.encode("utf-8"))
                    else:
                        row["status"] = "DIFFERENT"
                        failures.append(f"{name} FIM: got {got!r}, want {fim['expected']!r}")
                    report.append(row)
            if args.smoke_templates:
                for t in json.loads(Path(args.smoke_templates).read_text(encoding="utf-8")):
                    for conv in conversations:
                        if "tools" in conv.get("needs", []):
                            continue
                        row = {"family": "smoke:" + t["name"], "source": "go-executes", "conversation": conv["name"]}
                        try:
                            out = go.render(template=t["template"], system="", messages=conv["messages"],
                                            date=FIXED_DATE.isoformat())
                            ok = conv["messages"][-1]["content"].strip() in out
                            row["status"] = "equal" if ok else "DIFFERENT"
                            if not ok:
                                failures.append(f"smoke {t['name']} / {conv['name']}: last message missing from {out!r}")
                        except RuntimeError as e:
                            row["status"] = "DIFFERENT"
                            failures.append(f"smoke {t['name']} / {conv['name']}: {e}")
                        report.append(row)
        finally:
            go.close()

    # Summary: one line per family and source.
    summary = {}
    for row in report:
        k = (row["family"], row["source"])
        s = summary.setdefault(k, {})
        st = row["status"].split(":")[0]
        s[st] = s.get(st, 0) + 1
    for (fam, src), counts in sorted(summary.items()):
        print(f"{fam:16} {src:52} " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if args.verbose:
        for row in report:
            print(json.dumps(row, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    equal = sum(1 for r in report if r["status"] == "equal")
    for f in failures:
        print("FAIL: " + f, file=sys.stderr)
    print(f"{equal} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
