// Renders /api/v1/openapi.json as a readable page. No dependencies.
(function () {
  "use strict";
  const content = document.getElementById("content");
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    children.forEach((c) => e.append(c instanceof Node ? c : document.createTextNode(String(c))));
    return e;
  };
  const schemaBlock = (title, schema) => {
    const d = el("details", {}, el("summary", {}, title));
    d.append(el("pre", {}, JSON.stringify(schema, null, 2)));
    return d;
  };
  fetch("openapi.json")
    .then((r) => r.json())
    .then((doc) => {
      document.getElementById("version").textContent = doc.info.version;
      content.textContent = "";
      const groups = {};
      Object.entries(doc.paths).forEach(([path, methods]) => {
        Object.entries(methods).forEach(([verb, op]) => {
          const tag = (op.tags && op.tags[0]) || "other";
          (groups[tag] = groups[tag] || []).push([path, verb, op]);
        });
      });
      Object.keys(groups).sort().forEach((tag) => {
        content.append(el("h2", {}, tag));
        groups[tag].forEach(([path, verb, op]) => {
          const box = el("div", { class: "op", "data-path": path, "data-verb": verb });
          if (op["x-iris-scope"]) box.append(el("span", { class: "scope" }, "scope: " + op["x-iris-scope"]));
          box.append(el("span", { class: "verb " + verb }, verb), el("code", {}, path));
          box.append(el("div", {}, op.summary || ""));
          if (op["x-iris-operation"]) box.append(el("div", {}, "operation: ", el("code", {}, op["x-iris-operation"])));
          const params = (op.parameters || []);
          if (params.length) {
            const t = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "required")));
            params.forEach((p) => t.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, p.required ? "yes" : ""))));
            box.append(t);
          }
          const body = op.requestBody && op.requestBody.content["application/json"];
          if (body) box.append(schemaBlock("request body", body.schema));
          const ok = op.responses["200"] && op.responses["200"].content && op.responses["200"].content["application/json"];
          if (ok && ok.schema) box.append(schemaBlock("response", ok.schema));
          content.append(box);
        });
      });
      content.setAttribute("data-ready", "yes");
    })
    .catch((e) => { content.textContent = "Could not load openapi.json: " + e; });
})();
