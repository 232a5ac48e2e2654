// A Bun server with one dependency installed by bun from its bun.lock.
import ms from "ms";

Bun.serve({
  port: Number(process.env.PORT),
  fetch(req) {
    return new Response(`bun app ${Bun.version}: ${ms(60000)} ${new URL(req.url).pathname}\n`);
  },
});
