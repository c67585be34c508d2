// The API reference, rendered from /openapi.json without any library (FastAPI's own page needs a CDN).
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, attrs || {});
  for (const child of children) node.append(child);
  return node;
}

// Descriptions are written like Markdown: `code` (or ``code``) is shown as code, not as backticks.
function prose(text) {
  const t = String(text || "");
  const nodes = [];
  let at = 0;
  for (const m of t.matchAll(/``(.+?)``|`([^`]+)`/g)) {
    nodes.push(t.slice(at, m.index), el("code", {}, m[1] || m[2]));
    at = m.index + m[0].length;
  }
  nodes.push(t.slice(at));
  return nodes;
}

function resolve(spec, schema) {
  while (schema && schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}

function describe(spec, schema, depth = 0) {
  schema = resolve(spec, schema);
  if (depth > 3) return "…";
  if (schema.anyOf || schema.oneOf) return (schema.anyOf || schema.oneOf).map((s) => describe(spec, s, depth + 1)).join(" | ");
  if (schema.type === "array") return `[${describe(spec, schema.items || schema.prefixItems || {}, depth + 1)}]`;
  if (schema.type === "object" || schema.properties) {
    const props = Object.entries(schema.properties || {}).map(([k, v]) => `${k}: ${describe(spec, v, depth + 1)}`);
    return `{ ${props.join(", ")} }`;
  }
  return schema.format ? `${schema.type} (${schema.format})` : schema.type || "any";
}

fetch("/openapi.json")
  .then((r) => r.json())
  .then((spec) => {
    document.getElementById("version").textContent = spec.info.version;
    const main = document.getElementById("api");
    for (const [path, methods] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const card = el("section", { className: "card wide" }, el("h2", {}, `${method.toUpperCase()} ${path}`));
        if (op.summary) card.append(el("p", {}, ...prose(op.summary)));
        if (op.description) card.append(el("p", { className: "muted" }, ...prose(op.description)));
        for (const p of op.parameters || []) {
          card.append(el("p", {}, el("code", {}, `?${p.name}=${describe(spec, p.schema)}`), " ", ...prose(p.description)));
        }
        const body = op.requestBody && op.requestBody.content;
        if (body) {
          card.append(el("h3", {}, "Request body"));
          for (const [type, media] of Object.entries(body)) card.append(el("p", {}, el("code", {}, type), ` ${describe(spec, media.schema)}`));
        }
        card.append(el("h3", {}, "Responses"));
        for (const [code, response] of Object.entries(op.responses || {})) {
          const media = response.content && response.content["application/json"];
          card.append(el("p", {}, el("code", {}, code), " ", ...prose(response.description), " ", el("span", { className: "muted" }, media ? describe(spec, media.schema) : "")));
        }
        main.append(card);
      }
    }
  })
  .catch((err) => { document.getElementById("api").textContent = "cannot load /openapi.json: " + err.message; });
