const http = require("http");
const fs = require("fs");
const greeting = fs.readFileSync(__dirname + "/greeting.txt", "utf8");
http
  .createServer((req, res) => {
    if (req.url === "/healthz") {
      res.end("ok\n");
    } else {
      res.end(greeting);
    }
  })
  .listen(process.env.PORT || 3000);
