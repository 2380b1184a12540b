// The admin's catalog map: one plotly scatter trace per category (the legend toggles them), a
// side panel that shows the hovered product's 160 px thumbnail, title and category (plotly's
// hover labels cannot hold images), and a click that opens the product's admin page.
(function () {
  "use strict";
  const source = document.getElementById("catalog-map-data");
  const el = document.getElementById("catalog-map");
  if (!source || !el || !window.Plotly) return;
  const data = JSON.parse(source.textContent);
  const NONE = "(none)";

  const traces = data.categories.map(function (c) {
    return {
      type: "scatter",
      mode: "markers",
      name: c.name + " (" + c.id.length + ")",
      x: c.x,
      y: c.y,
      text: c.title,
      hovertemplate: "%{text}<extra>" + c.name.replace(/</g, "&lt;") + "</extra>",
      marker: c.name === NONE ? { size: 7, color: "#9e9e9e" } : { size: 7, opacity: 0.85 },
    };
  });
  const layout = {
    // Room at the top for the mode bar, so it never covers the legend.
    margin: { l: 50, r: 10, t: 40, b: 45 },
    hovermode: "closest",
    xaxis: { title: { text: "PC 1 (" + data.explained[0] + "% of variance)" }, zeroline: false },
    yaxis: { title: { text: "PC 2 (" + data.explained[1] + "% of variance)" }, zeroline: false },
    legend: { itemclick: "toggle", itemdoubleclick: "toggleothers" },
  };

  const thumb = document.getElementById("map-panel-thumb");
  const title = document.getElementById("map-panel-title");
  const category = document.getElementById("map-panel-category");
  const link = document.getElementById("map-panel-link");

  function changeUrl(id) {
    return data.change_url.replace("{id}", String(id));
  }

  function show(point) {
    const c = data.categories[point.curveNumber];
    const i = point.pointNumber;
    const src = c.thumb[i];
    if (src) {
      thumb.src = src;
      thumb.alt = c.title[i];
      thumb.hidden = false;
    } else {
      thumb.removeAttribute("src");
      thumb.hidden = true;
    }
    title.textContent = c.title[i];
    category.textContent = c.name;
    link.href = changeUrl(c.id[i]);
    link.hidden = false;
    el.dataset.shown = String(c.id[i]);
  }

  window.Plotly.newPlot(el, traces, layout, { responsive: true, displaylogo: false }).then(
    function () {
      el.on("plotly_hover", function (ev) {
        if (ev.points && ev.points.length) show(ev.points[0]);
      });
      el.on("plotly_click", function (ev) {
        if (!ev.points || !ev.points.length) return;
        show(ev.points[0]);
        window.location.href = link.href;
      });
      el.dataset.ready = "1";
    }
  );
})();
