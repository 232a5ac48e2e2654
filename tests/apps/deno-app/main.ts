// A Deno server with one npm dependency, fetched at build time (apps have no network).
import ms from "ms";

Deno.serve({ port: Number(Deno.env.get("PORT")) }, (req) =>
  new Response(`deno app ${Deno.version.deno}: ${ms(60000)} ${new URL(req.url).pathname}\n`)
);
