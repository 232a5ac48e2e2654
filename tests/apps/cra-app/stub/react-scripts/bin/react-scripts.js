#!/usr/bin/env node
// `react-scripts build` writes build/ from public/ and src/ as the real one does;
// `react-scripts start` (the dev server) fails loudly, since a host must never run it.
const fs = require("fs");
const path = require("path");

const command = process.argv[2];
if (command !== "build") {
  console.error(`react-scripts ${command}: the development server must not run in production`);
  process.exit(1);
}
const out = path.join(process.cwd(), "build");
fs.mkdirSync(path.join(out, "static", "js"), { recursive: true });
fs.copyFileSync("src/index.js", path.join(out, "static", "js", "main.js"));
const html = fs
  .readFileSync("public/index.html", "utf8")
  .replace("</body>", '<script src="/static/js/main.js"></script></body>')
  .replace("cra template", "cra app");
fs.writeFileSync(path.join(out, "index.html"), html);
console.log("Compiled successfully. The build folder is ready to be deployed.");
