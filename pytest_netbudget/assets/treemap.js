// netbudget's HTML report: a zoomable treemap per model, drawn from the JSON in #netbudget-data.
// Model text (names, paths, types) only ever reaches the page as textContent or an attribute value.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const HEIGHT = 440;
  const HEADER = 18;
  const data = JSON.parse(document.getElementById("netbudget-data").textContent);

  function element(name, attributes, parent) {
    const node = document.createElementNS(SVG, name);
    for (const key in attributes) node.setAttribute(key, attributes[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  // Squarified treemap (Bruls, Huizing and van Wijk, 2000): rows of cells whose aspect ratios
  // stay near 1, laid along the shorter side of what is left.
  function squarify(nodes, value, x, y, w, h) {
    const total = nodes.reduce((sum, node) => sum + value(node), 0);
    if (total <= 0 || w <= 0 || h <= 0) return [];
    const scale = (w * h) / total;
    const items = nodes.map((node) => ({ node: node, area: value(node) * scale }))
      .filter((item) => item.area > 0)
      .sort((a, b) => b.area - a.area);
    const placed = [];
    let row = [];
    function worst(cells, side) {
      const sum = cells.reduce((s, c) => s + c.area, 0);
      const max = Math.max(...cells.map((c) => c.area));
      const min = Math.min(...cells.map((c) => c.area));
      return Math.max((side * side * max) / (sum * sum), (sum * sum) / (side * side * min));
    }
    // One row along the shorter side: a column at the left when what is left is wide, else a row at the top.
    function lay(cells) {
      const wide = w >= h;
      const thick = cells.reduce((s, c) => s + c.area, 0) / (wide ? h : w);
      let along = wide ? y : x;
      for (const c of cells) {
        const length = c.area / thick;
        placed.push(wide ? { node: c.node, x: x, y: along, w: thick, h: length } : { node: c.node, x: along, y: y, w: length, h: thick });
        along += length;
      }
      if (wide) {
        x += thick;
        w -= thick;
      } else {
        y += thick;
        h -= thick;
      }
    }
    while (items.length) {
      const side = Math.min(w, h);
      if (!row.length || worst(row.concat([items[0]]), side) <= worst(row, side)) {
        row.push(items.shift());
      } else {
        lay(row);
        row = [];
      }
    }
    if (row.length) lay(row);
    return placed;
  }

  // Red for growth, green for shrinking, saturating at 25%; orange for a block that is new.
  function colour(now, before, compared) {
    if (!compared) return "hsl(210, 30%, 72%)";
    if (before === 0 && now > 0) return "hsl(25, 90%, 55%)";
    if (now === before) return "hsl(210, 12%, 78%)";
    const t = Math.min(Math.abs(now - before) / before / 0.25, 1);
    const hue = now > before ? 0 : 140;
    return "hsl(" + hue + ", " + (25 + 55 * t) + "%, " + (80 - 28 * t) + "%)";
  }

  function fit(text, width) {
    const room = Math.floor((width - 6) / 6.6);
    if (room < 3) return "";
    return text.length <= room ? text : text.slice(0, room - 1) + "\u2026";
  }

  function setup(model) {
    const section = document.getElementById(model.id);
    const box = section.querySelector(".treemap");
    const select = section.querySelector("select.metric");
    const crumbs = section.querySelector(".crumbs");
    const where = section.querySelector(".where");
    const legend = section.querySelector(".treemap-legend");
    const state = { metric: 0, trail: [model.tree] };
    model.metrics.forEach((name, index) => {
      const option = document.createElement("option");
      option.value = String(index);
      option.textContent = name;
      select.appendChild(option);
    });
    select.addEventListener("change", () => {
      state.metric = Number(select.value);
      draw();
    });
    const value = (node) => node.v[state.metric];
    const shown = (node) => (node.c || []).filter((child) => value(child) > 0);

    function describe(node) {
      const metric = model.metrics[state.metric];
      let text = (node.p || node.n) + (node.t ? " (" + node.t + ")" : "") + "\n" + metric + " " + node.s[state.metric];
      if (model.compared) text += ", " + node.d[state.metric];
      return text;
    }

    function zoom(node) {
      state.trail.push(node);
      draw();
    }

    function zoomOut() {
      if (state.trail.length > 1) {
        state.trail.pop();
        draw();
      }
    }
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape" || event.key === "Backspace") zoomOut();
    });

    function cell(svg, item, depth) {
      const node = item.node;
      const g = element("g", { class: "cell", "data-path": node.p, "data-depth": String(depth) }, svg);
      element("title", {}, g).textContent = describe(node);
      element("rect", {
        x: item.x, y: item.y, width: Math.max(item.w, 0), height: Math.max(item.h, 0),
        fill: colour(node.v[state.metric], node.o[state.metric], model.compared),
      }, g);
      return g;
    }

    function draw() {
      const current = state.trail[state.trail.length - 1];
      const width = Math.max(box.clientWidth, 200);
      box.textContent = "";
      const svg = element("svg", { width: width, height: HEIGHT, viewBox: "0 0 " + width + " " + HEIGHT, role: "img" }, box);
      const top = shown(current).length ? shown(current) : [current];
      for (const item of squarify(top, value, 0, 0, width, HEIGHT)) {
        const g = cell(svg, item, 1);
        const inner = shown(item.node);
        if (inner.length && item.node !== current) {
          g.setAttribute("tabindex", "0");
          g.setAttribute("role", "button");
          g.classList.add("zooms");
          g.addEventListener("click", () => zoom(item.node));
          g.addEventListener("keydown", (event) => {
            if (event.key === "Enter" || event.key === " ") zoom(item.node);
          });
          g.addEventListener("contextmenu", (event) => {
            event.preventDefault();
            zoomOut();
          });
          if (item.w > 12 && item.h > HEADER + 8) {
            for (const child of squarify(inner, value, item.x + 3, item.y + HEADER, item.w - 6, item.h - HEADER - 3)) {
              const small = cell(g, child, 2);
              small.classList.add("inner");
              const label = child.h > 14 ? fit(child.node.n, child.w) : "";
              if (label) element("text", { x: child.x + 3, y: child.y + 12 }, small).textContent = label;
            }
          }
        }
        if (item.h > 14) {
          const label = fit(item.node.n + " " + item.node.s[state.metric], item.w);
          if (label) element("text", { x: item.x + 4, y: item.y + 13 }, g).textContent = label;
        }
      }
      crumbs.textContent = "";
      state.trail.forEach((node, index) => {
        if (index) crumbs.appendChild(document.createTextNode(" / "));
        const last = index === state.trail.length - 1;
        const crumb = document.createElement(last ? "span" : "button");
        crumb.textContent = node.n;
        if (!last) {
          crumb.type = "button";
          crumb.addEventListener("click", () => {
            state.trail = state.trail.slice(0, index + 1);
            draw();
          });
        }
        crumbs.appendChild(crumb);
      });
      where.textContent = describe(current).replace("\n", ": ");
    }

    const keys = model.compared
      ? [["shrank 25% or more", 3, 4], ["unchanged", 1, 1], ["grew 25% or more", 5, 4], ["new", 1, 0]]
      : [["no baseline to compare with", 1, 1]];
    for (const [label, now, before] of keys) {
      const item = document.createElement("li");
      const swatch = element("svg", { class: "swatch", viewBox: "0 0 12 12" }, item);
      element("rect", { width: 12, height: 12, fill: colour(now, before, model.compared) }, swatch);
      item.appendChild(document.createTextNode(label));
      legend.appendChild(item);
    }
    draw();
    window.addEventListener("resize", draw);
  }

  data.models.forEach(setup);
})();
