/* rlmx viewer: where a run's time and tokens went, one row per iteration.
 *
 * Plain DOM (div bars sized in percent), no canvas, no library. Each row shows the
 * iteration's time split into the root model's reply, its code, and the sub-calls the
 * code made, and its tokens split into the root model's and the sub-calls'. Long runs
 * are grouped so the chart stays at most MAX_ROWS rows.
 *
 * rlmChart.timeline(iters, fmt, onPick): `iters` are the run's iteration views,
 * `fmt` = {time, int} formatters, `onPick(index into iters)` is called on a row click.
 */
var rlmChart = (function () {
  "use strict";

  var MAX_ROWS = 60;
  var PARTS = [["model", "root model"], ["code", "code"], ["sub", "sub-calls"]];

  function node(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function bar(values, max, labels, kind) {
    var box = node("div", "bar " + kind);
    values.forEach(function (v, k) {
      if (!v || !max) return;
      var seg = node("span", "seg seg-" + labels[k][0]);
      seg.style.width = Math.max((v / max) * 100, 0.6).toFixed(2) + "%";
      box.appendChild(seg);
    });
    return box;
  }

  function rows(iters) {
    var size = Math.ceil(iters.length / MAX_ROWS) || 1;
    var out = [];
    for (var start = 0; start < iters.length; start += size) {
      var group = iters.slice(start, start + size);
      var row = { first: start, time: [0, 0, 0], tok: [0, 0], estimated: false, unknownModel: false, derived: false, label: "" };
      group.forEach(function (it) {
        var t = it.timing;
        if (t.model === null) row.unknownModel = true;
        row.time[0] += t.model || 0;
        row.time[1] += t.code;
        row.time[2] += t.sub;
        row.estimated = row.estimated || t.estimated;
        if (it.tokens.model === null) row.unknownModel = true;
        if (it.tokens.derived) row.derived = true;
        row.tok[0] += it.tokens.model || 0;
        row.tok[1] += it.tokens.sub;
      });
      var a = group[0], b = group[group.length - 1];
      row.label = a.final_call ? "final" : group.length === 1 ? "#" + a.n : "#" + a.n + "–" + (b.final_call ? "final" : b.n);
      out.push(row);
    }
    return out;
  }

  function sum(list) { return list.reduce(function (s, v) { return s + v; }, 0); }

  function legend(fmt, time, tok) {
    var box = node("div", "chart-legend");
    var total = sum(time);
    PARTS.forEach(function (p, k) {
      var item = node("span", "legend-item");
      item.appendChild(node("span", "swatch seg-" + p[0]));
      var pct = total ? " (" + Math.round((time[k] / total) * 100) + "%)" : "";
      item.appendChild(document.createTextNode(p[1] + " " + fmt.time(time[k]) + pct));
      box.appendChild(item);
    });
    box.appendChild(node("span", "legend-sep", "·"));
    box.appendChild(node("span", "legend-item", "tokens: root model " + fmt.int(tok[0]) + ", sub-calls " + fmt.int(tok[1])));
    return box;
  }

  function timeline(iters, fmt, onPick) {
    var section = node("section", "chart");
    var list = rows(iters);
    var maxTime = Math.max.apply(null, list.map(function (r) { return sum(r.time); }).concat([0]));
    var maxTok = Math.max.apply(null, list.map(function (r) { return sum(r.tok); }).concat([0]));
    var head = node("div", "chart-head");
    head.appendChild(node("h4", null, "Where the time and tokens went"));
    var time = [0, 0, 0], tok = [0, 0];
    list.forEach(function (r) {
      for (var k = 0; k < 3; k++) time[k] += r.time[k];
      tok[0] += r.tok[0];
      tok[1] += r.tok[1];
    });
    head.appendChild(legend(fmt, time, tok));
    section.appendChild(head);
    var grid = node("div", "chart-grid");
    grid.appendChild(node("span", "chart-col", ""));
    grid.appendChild(node("span", "chart-col", "time"));
    grid.appendChild(node("span", "chart-col", ""));
    grid.appendChild(node("span", "chart-col", "tokens"));
    grid.appendChild(node("span", "chart-col", ""));
    list.forEach(function (r) {
      var label = node("button", "chart-label link", r.label);
      label.type = "button";
      label.addEventListener("click", function () { onPick(r.first); });
      var t = sum(r.time), k = sum(r.tok);
      var timeBar = bar(r.time, maxTime, PARTS, "time-bar");
      timeBar.title = PARTS.map(function (p, j) { return p[1] + ": " + fmt.time(r.time[j]); }).join(", ") +
        (r.estimated ? " (model time estimated: iteration time minus code time)" : "");
      var tokBar = bar(r.tok, maxTok, [["model"], ["sub"]], "tok-bar");
      tokBar.title = "root model: " + (r.unknownModel ? "not logged" : fmt.int(r.tok[0])) +
        (r.derived ? " (the run total minus what the log records per iteration)" : "") + ", sub-calls: " + fmt.int(r.tok[1]);
      grid.appendChild(label);
      grid.appendChild(timeBar);
      grid.appendChild(node("span", "chart-num", fmt.time(t) || "–"));
      grid.appendChild(tokBar);
      grid.appendChild(node("span", "chart-num", (k ? fmt.int(k) : "–") + (r.unknownModel ? "*" : r.derived ? "†" : "")));
    });
    section.appendChild(grid);
    if (list.some(function (r) { return r.unknownModel; })) {
      section.appendChild(node("p", "chart-note", "* the log does not record the root model's own tokens for this row (an older log)."));
    }
    if (list.some(function (r) { return r.derived; })) {
      section.appendChild(node("p", "chart-note", "† the root model's tokens here are the run's total minus everything logged per iteration."));
    }
    return section;
  }

  return { timeline: timeline };
})();
