"""Write a Report to reports/<name>/: Markdown, self-contained HTML (plots as base64 PNG), LaTeX, CSV, PNG and
meta.json (the query, run ids, git SHA, time: enough to regenerate it); and a rich preview in the terminal."""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

from mta_lab.report.table import Report, Table


def _cells(table: Table, bold: str, fmt=lambda s: s) -> list[list[str]]:
    out = []
    for i, row in enumerate(table.display.itertuples(index=False)):
        out.append([bold.format(fmt(str(v))) if (i, c) in table.bold else fmt(str(v))
                    for c, v in zip(table.display.columns, row, strict=True)])
    return out


def to_markdown(report: Report) -> str:
    lines = [f"# {report.title}", ""] + [f"{n}  " for n in report.notes] + [""]
    for t in report.tables:
        cols = [str(c) for c in t.display.columns]
        lines += [f"## {t.title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _cells(t, "**{}**")]
        lines += [""] + [f"- {n}" for n in t.notes] + [""]
    for stem, (_, caption) in report.figures.items():
        lines += [f"![{caption}]({stem}.png)", "", f"*{caption}*", ""]
    return "\n".join(lines)


def to_html(report: Report, pngs: dict[str, bytes]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>", f"<title>{e(report.title)}</title><style>",
             "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
             ".notes{color:#444;font-size:90%}img{max-width:100%}",
             "</style></head><body>", f"<h1>{e(report.title)}</h1>"]
    parts += [f"<p class='notes'>{e(n)}</p>" for n in report.notes]
    for t in report.tables:
        parts.append(f"<h2>{e(t.title)}</h2><table><tr>" + "".join(f"<th>{e(str(c))}</th>" for c in t.display.columns)
                     + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in _cells(t, "<b>{}</b>", e)]
        parts.append("</table><ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in t.notes) + "</ul>")
    for stem, (_, caption) in report.figures.items():
        data = base64.b64encode(pngs[stem]).decode()
        parts.append(f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


_LATEX = [("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"), ("$", "\\$"),
          ("{", "\\{"), ("}", "\\}"), ("~", "\\textasciitilde{}"), ("^", "\\^{}")]
_LATEX_SYMBOLS = {"±": "$\\pm$", "✓": "\\checkmark", "×": "$\\times$", "Δ": "$\\Delta$", "†": "$^\\dagger$",
                  "—": "--", "−": "-", "≥": "$\\geq$", "·": "$\\cdot$", "α": "$\\alpha$"}


def latex_escape(text: str) -> str:
    text = "".join(ch if ch not in "\\&%_#${}~^" else dict(_LATEX)[ch] for ch in text)
    for sym, tex in _LATEX_SYMBOLS.items():
        text = text.replace(sym, tex)
    return text


def to_latex(report: Report) -> str:
    out = ["% " + report.title, "% needs \\usepackage{amssymb} (\\checkmark) and booktabs", ""]
    for t in report.tables:
        cols = list(t.display.columns)
        out += ["\\begin{table}[t]", "\\centering", "\\small", f"\\begin{{tabular}}{{l{'r' * (len(cols) - 1)}}}",
                "\\toprule", " & ".join(latex_escape(str(c)) for c in cols) + " \\\\", "\\midrule"]
        out += [" & ".join(row) + " \\\\" for row in _cells(t, "\\textbf{{{}}}", latex_escape)]
        out += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{latex_escape(t.title + '. ' + ' '.join(t.notes))}}}",
                f"\\label{{tab:{report.name}-{t.name}}}", "\\end{table}", ""]
    return "\n".join(out)


def write_report(report: Report, out_root: str | Path = "reports") -> Path:
    out = Path(out_root) / report.name
    out.mkdir(parents=True, exist_ok=True)
    pngs = {}
    for stem, (fig, _) in report.figures.items():
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        pngs[stem] = path.read_bytes()
        import matplotlib.pyplot as plt

        plt.close(fig)
    for t in report.tables:
        t.data.to_csv(out / f"{t.name}.csv", index=False)
    (out / "report.md").write_text(to_markdown(report))
    (out / "report.html").write_text(to_html(report, pngs))
    (out / "report.tex").write_text(to_latex(report))
    meta = {"name": report.name, "kind": report.kind, "title": report.title,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **report.meta,
            "files": sorted(p.name for p in out.iterdir() if p.name != "meta.json") + ["meta.json"]}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return out


def preview(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    console.print(f"[bold]{report.title}[/]")
    for note in report.notes:
        console.print(note, style="dim", highlight=False)
    for t in report.tables:
        rt = RichTable(title=t.title, show_lines=False)
        for c in t.display.columns:
            rt.add_column(str(c), justify="left" if c == t.display.columns[0] else "right")
        for row in _cells(t, "[bold]{}[/bold]", lambda s: s.replace("[", "\\[")):
            rt.add_row(*row)
        console.print(rt)
        for n in t.notes:
            console.print(f"  {n}", style="dim", highlight=False)
