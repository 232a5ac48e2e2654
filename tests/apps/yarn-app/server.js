// A server with one dependency installed by yarn 1 from its yarn.lock.
const http = require("http");
const ms = require("ms");
http
  .createServer((req, res) => res.end(`yarn app: ${ms(60000)}\n`))
  .listen(process.env.PORT);
