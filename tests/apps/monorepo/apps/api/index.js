const http = require("http");
http
  .createServer((req, res) => res.end(JSON.stringify({ app: "api", path: req.url })))
  .listen(process.env.PORT);
