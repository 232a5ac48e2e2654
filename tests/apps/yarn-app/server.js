// An Express server whose dependencies yarn 1 installs from its yarn.lock.
const express = require("express");
const ms = require("ms");
const app = express();
app.get("/", (req, res) => res.type("text/plain").send(`yarn app: ${ms(60000)}\n`));
app.get("/users/:id", (req, res) => res.json({ id: req.params.id, via: "express" }));
app.listen(process.env.PORT);
