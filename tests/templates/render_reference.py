#!/usr/bin/env python3
"""Reference renderings for tests/modelfile_render.rs: the same cases rendered by real jinja2
(in the environment transformers' apply_chat_template uses) and by real Go text/template
(tests/templates/ollama_render.go, Ollama's data and preprocessing).

Usage: render_reference.py CASES.json OUT.json

CASES.json: {"jinja": [{"id", "source" (path of a .jinja file), "messages", "tools",
              "bos_token", "eos_token", "enable_thinking" (optional), "date"}],
             "go": [{"id", "template", "system", "messages", "tools", "think", "date"}]}
OUT.json:   {id: {"ok": text} | {"rejected": message} | {"error": message}}

Jinja: raise_exception(...) is "rejected"; any other failure "error". Go: a template error
is "error". Dates: strftime_now and currentDate see the case's date at 12:00.
"""

import datetime
import json
import sys
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from driver import GoRenderer  # noqa: E402  (builds and drives ollama_render.go)


class Rejected(Exception):
    pass


def environment(date):
    def raise_exception(message):
        raise Rejected(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.combine(date, datetime.time(12, 0)).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


class Generation(jinja2.ext.Extension):
    """transformers' {% generation %} ... {% endgeneration %}: renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def main():
    cases = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out = {}
    compiled = {}
    for c in cases.get("jinja", []):
        date = datetime.date.fromisoformat(c["date"])
        key = (c["source"], c["date"])
        try:
            if key not in compiled:
                env = environment(date)
                env.add_extension(Generation)
                compiled[key] = env.from_string(Path(c["source"]).read_text(encoding="utf-8"))
            kwargs = dict(
                messages=c["messages"],
                tools=c.get("tools"),
                documents=None,
                add_generation_prompt=True,
                bos_token=c["bos_token"],
                eos_token=c["eos_token"],
            )
            if c.get("enable_thinking") is not None:
                kwargs["enable_thinking"] = c["enable_thinking"]
            out[c["id"]] = {"ok": compiled[key].render(**kwargs)}
        except Rejected as e:
            out[c["id"]] = {"rejected": str(e)}
        except Exception as e:  # noqa: BLE001 - any failure of the template is a result
            out[c["id"]] = {"error": f"{type(e).__name__}: {e}"}
    go_cases = cases.get("go", [])
    if go_cases:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            go = GoRenderer(tmp)
            try:
                for c in go_cases:
                    try:
                        out[c["id"]] = {
                            "ok": go.render(
                                template=c["template"],
                                system=c.get("system") or "",
                                messages=c["messages"],
                                tools=c.get("tools"),
                                think=c.get("think"),
                                date=c["date"],
                            )
                        }
                    except RuntimeError as e:
                        out[c["id"]] = {"error": str(e)}
            finally:
                go.close()
    Path(sys.argv[2]).write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
