// A server with one dependency installed by pnpm from its pnpm-lock.yaml.
const http = require("http");
const ms = require("ms");
http
  .createServer((req, res) => res.end(`pnpm app: ${ms(60000)}\n`))
  .listen(process.env.PORT);
