"""What github.com needs of a PR comment, asserted: it parses, links and images are absolute (a relative one
points into the repository), and its Mermaid blocks are xychart-beta charts github.com can draw."""

from __future__ import annotations

import json
import re

from markdown_it import MarkdownIt

NUMBER = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)"  # what Mermaid's xychart lexer reads as a number: no exponent, no nan


def _tokens(tokens):
    for token in tokens:
        yield token
        yield from _tokens(token.children or [])


def mermaid_charts(text: str) -> list[dict]:
    """Each ```mermaid block of ``text``, checked well-formed for xychart-beta, as {title, x, y, lines}."""
    md = MarkdownIt("commonmark").enable("table")
    charts = []
    for token in md.parse(text):
        if token.type != "fence" or token.info.strip() != "mermaid":
            continue
        lines = [line.strip() for line in token.content.strip().splitlines()]
        directives = [line for line in lines if line.startswith("%%{")]
        for line in directives:  # the init directive's object is JSON
            assert re.fullmatch(r"%%\{init: (\{.*\})\}%%", line), line
            json.loads(re.fullmatch(r"%%\{init: (\{.*\})\}%%", line).group(1))
        body = [line for line in lines if not line.startswith("%%")]
        assert body[0] == "xychart-beta", body
        title = re.fullmatch(r'title "([^"]*)"', body[1])
        assert title, body[1]
        x_range = re.fullmatch(rf'x-axis "epoch" ({NUMBER}) --> ({NUMBER})', body[2])
        x_band = re.fullmatch(r'x-axis "epoch" \[("[^"]*"(?:, "[^"]*")*)\]', body[2])
        assert x_range or x_band, body[2]
        y = re.fullmatch(rf'y-axis "[^"]+" ({NUMBER}) --> ({NUMBER})', body[3])
        assert y and float(y.group(1)) < float(y.group(2)), body[3]
        series = []
        for line in body[4:]:
            m = re.fullmatch(rf"line \[({NUMBER}(?:, {NUMBER})*)\]", line)
            assert m, line
            series.append([float(v) for v in m.group(1).split(", ")])
        assert series
        for values in series:  # every value inside the y range, and one per x
            assert all(float(y.group(1)) <= v <= float(y.group(2)) for v in values)
            if x_band:
                assert len(values) == len(x_band.group(1).split(", "))
            else:
                lo, hi = int(x_range.group(1)), int(x_range.group(2))
                assert len(values) >= 2 and (hi - lo) % (len(values) - 1) == 0, (lo, hi, len(values))
        assert len({len(v) for v in series}) == 1  # lines share the x-axis
        x = [int(v.strip('"')) for v in x_band.group(1).split(", ")] if x_band else (x_range.group(1), x_range.group(2))
        charts.append({"title": title.group(1), "x": x, "y": (y.group(1), y.group(2)), "lines": series})
    return charts


def assert_github_markdown(text: str) -> str:
    """``text`` parses and renders, and every link or image in it is an absolute http(s) URL or an in-page
    anchor: on github.com a relative one points into the repository, not at the runner's files. Returns the
    HTML."""
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    for token in _tokens(md.parse(text)):
        for attr in ("href", "src"):
            target = token.attrGet(attr) if token.type in ("link_open", "image") else None
            if target is not None:
                assert re.match(r"https?://|#", target), f"relative {attr}: {target!r}"
        if token.type in ("html_block", "html_inline"):
            assert not re.search(r"\b(href|src)\s*=", token.content), token.content
    html = md.render(text)
    assert html.strip()
    mermaid_charts(text)
    return html
