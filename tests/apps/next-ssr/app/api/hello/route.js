export const dynamic = "force-dynamic";

export function GET() {
  return Response.json({ hello: "from a next route handler", pid: process.pid > 0 });
}
