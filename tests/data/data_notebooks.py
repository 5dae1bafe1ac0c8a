"""Test notebooks built by running real code in a real kernel and saving them with nbformat."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nbformat

from notebook_agent.kernel import make_session

SALES_CSV = "region,month,units,price\n" + "\n".join(
    f"{r},{m},{10 + (i * 7) % 23},{2.5 + (i % 5) * 0.5}"
    for i, (r, m) in enumerate((r, m) for r in ["north", "south", "east", "west"] for m in range(1, 13)))
WEATHER_CSV = "city,day,temp,rain\n" + "\n".join(
    f"{c},{d},{12 + (d * 3 + k) % 15},{(d + k) % 4 * 1.5}" for k, c in enumerate(["oslo", "rome", "lima"])
    for d in range(1, 31))

SALES = [
    "import pandas as pd\nimport numpy as np\ndf = pd.read_csv('sales.csv')\nprint(df.shape)",
    "df['revenue'] = df['units'] * df['price']\ntotals = df.groupby('region')['revenue'].sum()\nprint(totals.round(2))",
    "best = totals.idxmax()\nprint('best region:', best)\nprint('mean units:', round(df['units'].mean(), 3))",
    "monthly = df.groupby('month')['units'].sum()\nprint('peak month:', int(monthly.idxmax()))",
]
WEATHER = [
    "import pandas as pd\nw = pd.read_csv('weather.csv')\nprint(w.describe().loc[['mean', 'max']])",
    "rainy = w[w['rain'] > 2]\nprint('rainy days:', len(rainy))\nby_city = w.groupby('city')['temp'].agg(['mean', 'max'])",
    "print(by_city.round(2))\nwarmest = by_city['mean'].idxmax()\nprint('warmest city:', warmest)",
    "corr = w['temp'].corr(w['rain'])\nprint('temp/rain correlation:', round(corr, 4))",
]
# A near-duplicate of SALES: a comment, one changed literal, one extra line.
SALES_NEAR = [SALES[0] + "  # load the data", SALES[1], SALES[2].replace("round(df['units'].mean(), 3)",
                                                                          "round(df['units'].mean(), 2)"),
              SALES[3] + "\nprint(monthly.head())"]
ERRORING = SALES[:2] + ["print(df['no_such_column'].sum())", SALES[3]]
TITANIC = ["import pandas as pd\ntitanic = pd.read_csv('titanic.csv')\nprint(titanic.head())",
           "rate = titanic.groupby('sex')['survived'].mean()\nprint(rate)",
           "print('overall survival:', round(titanic['survived'].mean(), 3))\nprint(len(titanic))"]
TITANIC_CSV = "sex,survived\n" + "\n".join(f"{'male' if i % 3 else 'female'},{i % 2}" for i in range(40))
DEEP = ["import torch\nimport pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)",
        "x = torch.tensor(df['units'].values, dtype=torch.float32)\nprint(float(x.mean()))",
        "layer = torch.nn.Linear(1, 1)\nprint(layer(x[:3, None]).shape)"]
API = ["import requests\nimport pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)",
       SALES[1], "def fetch(url):\n    return requests.get(url, timeout=5).json()\nprint(callable(fetch))"]
TINY = ["print(1 + 1)"]


async def _run(session, sources: list[str], order: list[int] | None = None, skip: set[int] = frozenset()):
    cells = [nbformat.v4.new_code_cell(src) for src in sources]
    for i in (order if order is not None else range(len(sources))):
        if i in skip:
            continue
        r = await session.execute(sources[i])
        cells[i].execution_count = r.execution_count
        cells[i].outputs = [nbformat.from_dict(o) for o in r.outputs]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Analysis")] + cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


async def _build(folder: Path, data: Path) -> dict[str, Path]:
    files = [data / "sales.csv", data / "weather.csv", data / "titanic.csv"]
    session = make_session("local", files=files)
    await session.start()
    out: dict[str, Path] = {}

    async def save(name: str, sources: list[str], **kw) -> None:
        nb = await _run(session, sources, **kw)
        nbformat.validate(nb)
        out[name] = folder / f"{name}.ipynb"
        nbformat.write(nb, out[name])

    try:
        await save("good_sales", SALES)
        await save("good_weather", WEATHER)
        await save("near_dup_sales", SALES_NEAR)
        await save("out_of_order", SALES, order=[0, 1, 3, 2])
        await save("unexecuted", WEATHER, skip={3})
        await save("erroring", ERRORING)
        await save("teaching", TITANIC)
        await save("deep_learning", DEEP)
        await save("external_api", API)
        await save("tiny", TINY)
    finally:
        await session.close()
    r_nb = json.loads(out["good_weather"].read_text())
    r_nb["metadata"]["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    r_nb["metadata"]["language_info"] = {"name": "R"}
    out["r_kernel"] = folder / "r_kernel.ipynb"
    out["r_kernel"].write_text(json.dumps(r_nb))
    text = out["good_sales"].read_text()
    out["truncated"] = folder / "truncated.ipynb"
    out["truncated"].write_text(text[: len(text) // 2])
    return out


def build_corpus(root: Path) -> tuple[Path, Path, dict[str, Path]]:
    """(notebook folder, data folder, name -> notebook path)."""
    nbdir, data = root / "notebooks", root / "data"
    nbdir.mkdir(parents=True)
    data.mkdir(parents=True)
    (data / "sales.csv").write_text(SALES_CSV + "\n")
    (data / "weather.csv").write_text(WEATHER_CSV + "\n")
    (data / "titanic.csv").write_text(TITANIC_CSV + "\n")
    return nbdir, data, asyncio.run(_build(nbdir, data))
