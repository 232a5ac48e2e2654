const http = require("http");
http
  .createServer((req, res) => res.end(`monorepo web ${req.url}`))
  .listen(process.env.PORT, () => console.log(`web listening on ${process.env.PORT}`));
