"""The report page's script: draws every interactive view with plotly.js.

Kept as a Python string so that it ships with the package. Views are JSON specs in
``<script type="application/json" class="view-spec">`` elements (see
:mod:`lenslab.figures.interactive`): "plotly" specs are plotly figures; "visibility" is F15's
every-cell map, where hovering a cell makes it the query (seed 003) and a click freezes it.
"""

RENDER_JS = r"""
(function () {
  "use strict";
  var CONFIG = {displaylogo: false, responsive: false, scrollZoom: false};

  function visibilityMap(s, q) {
    var S = s.shape[0], T = s.shape[1], V = s.values, z = [], text = [];
    function at(l, t, l2, t2) { return V[((l * T + t) * S + l2) * T + t2]; }
    for (var a = 0; a < S; a++) {
      var zr = [], tr = [];
      for (var b = 0; b < T; b++) {
        var v = 0, how = "not connected to the query";
        if (a === q[0] && b === q[1]) { how = "the query cell"; }
        else if (a <= q[0] && b <= q[1]) { v = at(q[0], q[1], a, b); how = "seen by the query"; }
        else if (a >= q[0] && b >= q[1]) { v = at(a, b, q[0], q[1]); how = "reached by the query"; }
        zr.push(v > 0 ? Math.log10(v) : null);
        tr.push("<b>layer " + a + ", position " + b + "</b> " + s.tokens[b] + "<br>" + how +
                (v > 0 ? ": " + v.toPrecision(3) : ""));
      }
      z.push(zr); text.push(tr);
    }
    return {z: z, text: text};
  }

  function drawVisibility(div, s) {
    var S = s.shape[0], T = s.shape[1], q = s.query.slice(), frozen = false;
    var m = visibilityMap(s, q), xs = [], ys = [];
    for (var b = 0; b < T; b++) { xs.push(b); }
    for (var a = 0; a < S; a++) { ys.push(a); }
    var ticks = s.tokens.map(function (t, i) { return i + " " + t; });
    var heat = {type: "heatmap", x: xs, y: ys, z: m.z, text: m.text, xgap: 1, ygap: 1,
      hovertemplate: "%{text}<extra></extra>", colorscale: "Viridis", zmin: s.range[0],
      zmax: s.range[1], colorbar: {title: {text: "log10 summed |gradient|"}}};
    var mark = {type: "scatter", mode: "markers", x: [q[1]], y: [q[0]], hoverinfo: "skip",
      marker: {symbol: "square-open", size: 16, color: "red", line: {width: 2}}};
    function title() {
      return s.title + " — query: layer " + q[0] + ", position " + q[1] + " " + s.tokens[q[1]] +
        (frozen ? " (frozen: click to release)" : "");
    }
    var layout = {title: {text: title(), font: {size: 13}}, width: Math.max(560, 170 + 22 * T),
      height: 200 + 34 * S, margin: {l: 80, r: 20, t: 50, b: 110}, showlegend: false,
      xaxis: {tickvals: xs, ticktext: ticks, tickangle: -60, title: {text: "position"}},
      yaxis: {tickvals: ys, title: {text: "layer l = resid[l]"}}};
    Plotly.newPlot(div, [heat, mark], layout, CONFIG);
    function pick(l, t) {
      if (l === q[0] && t === q[1]) { return; }
      q = [l, t];
      var m2 = visibilityMap(s, q);
      Plotly.restyle(div, {z: [m2.z], text: [m2.text]}, [0]);
      Plotly.restyle(div, {x: [[t]], y: [[l]]}, [1]);
      Plotly.relayout(div, {"title.text": title()});
      div.setAttribute("data-query", l + "," + t);
    }
    div.setAttribute("data-query", q[0] + "," + q[1]);
    div.on("plotly_hover", function (ev) {
      var p = ev.points[0];
      if (!frozen && p.curveNumber === 0) { pick(p.y, p.x); }
    });
    div.on("plotly_click", function (ev) {
      var p = ev.points[0];
      frozen = !frozen;
      if (p.curveNumber === 0) { q = [-1, -1]; pick(p.y, p.x); }
    });
  }

  function render() {
    var specs = document.querySelectorAll("script.view-spec");
    for (var i = 0; i < specs.length; i++) {
      var spec = JSON.parse(specs[i].textContent);
      var div = document.getElementById(specs[i].getAttribute("data-target"));
      if (spec.kind === "plotly") { Plotly.newPlot(div, spec.data, spec.layout, CONFIG); }
      else if (spec.kind === "visibility") { drawVisibility(div, spec); }
      div.setAttribute("data-rendered", "1");
    }
    document.body.setAttribute("data-views-rendered", String(specs.length));
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", render);
  } else { render(); }
})();
"""
