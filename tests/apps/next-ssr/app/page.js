import { headers } from "next/headers";

// Rendered on every request by the Next.js server (not prerendered).
export const dynamic = "force-dynamic";

export default function Home() {
  const agent = headers().get("user-agent") ?? "none";
  return <main><h1>next ssr home</h1><p>rendered for {agent}</p></main>;
}
