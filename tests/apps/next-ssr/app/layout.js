export const metadata = { title: "next ssr" };
export default function RootLayout({ children }) {
  return (<html lang="en"><body>{children}</body></html>);
}
