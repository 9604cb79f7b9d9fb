// normscope HTML report: sortable tables (click a header) and row filters. No network, no libraries.
"use strict";
function sortKey(cell, numeric) {
  const text = cell.textContent.trim();
  if (!numeric) return text.toLowerCase();
  if (text === "inf") return Infinity;
  if (text === "-inf") return -Infinity;
  const value = parseFloat(text.replace(/[,%\s]/g, ""));
  return Number.isNaN(value) ? null : value;  // "nan", "—": always last
}
document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("thead th").forEach((th, col) => {
    th.tabIndex = 0;
    const sort = () => {
      const numeric = th.dataset.sort === "num";
      // numbers sort largest first on the first click, names A to Z
      const first = numeric ? "descending" : "ascending";
      const order = th.getAttribute("aria-sort") === first ? (numeric ? "ascending" : "descending") : first;
      table.querySelectorAll("thead th").forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", order);
      const sign = order === "ascending" ? 1 : -1;
      const body = table.tBodies[0];
      const rows = Array.from(body.rows).map((row) => [sortKey(row.cells[col], numeric), row]);
      rows.sort(([a], [b]) => (a === null) - (b === null) || (a === null ? 0 : sign * (a < b ? -1 : a > b ? 1 : 0)));
      rows.forEach(([, row]) => body.appendChild(row));
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
  });
});
document.querySelectorAll("input[data-filter]").forEach((input) => {
  const target = document.getElementById(input.dataset.filter);
  const count = document.querySelector(`output[data-count="${input.dataset.filter}"]`);
  input.addEventListener("input", () => {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    const rows = target.querySelectorAll("[data-row]");
    let shown = 0;
    rows.forEach((row) => {
      const text = row.textContent.toLowerCase();
      row.hidden = !words.every((w) => text.includes(w));
      shown += row.hidden ? 0 : 1;
    });
    if (count) count.textContent = `${shown} of ${rows.length}`;
  });
});
