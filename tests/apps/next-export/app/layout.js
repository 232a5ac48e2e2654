export const metadata = { title: "next export" };
export default function RootLayout({ children }) {
  return (<html lang="en"><body>{children}</body></html>);
}
