"""Example analysis run by scripts/demo inside a codeq sandbox.

Reads sales.csv from the workspace, prints summary statistics, and writes
summary.json and revenue_by_month.png back to the workspace.
"""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

sales = pd.read_csv("sales.csv", parse_dates=["date"])
sales["revenue"] = sales["units"] * sales["unit_price"]

print(f"{len(sales)} rows, {sales['date'].min():%Y-%m-%d} to {sales['date'].max():%Y-%m-%d}")
by_region = sales.groupby("region")["revenue"].agg(["sum", "mean", "std"]).round(2)
print("\nRevenue by region:")
print(by_region.to_string())

monthly = sales.set_index("date").resample("MS")["revenue"].sum()
best = monthly.idxmax()
print(f"\nBest month: {best:%B %Y} ({monthly.max():,.2f})")

fig, ax = plt.subplots(figsize=(8, 4))
monthly.plot(ax=ax, marker="o")
ax.set_title("Revenue by month")
ax.set_ylabel("revenue")
fig.tight_layout()
fig.savefig("revenue_by_month.png", dpi=100)

with open("summary.json", "w") as f:
    json.dump(
        {
            "rows": int(len(sales)),
            "total_revenue": round(float(sales["revenue"].sum()), 2),
            "revenue_by_region": by_region["sum"].to_dict(),
            "best_month": best.strftime("%Y-%m"),
        },
        f,
        indent=2,
    )
print("\nwrote summary.json and revenue_by_month.png")
