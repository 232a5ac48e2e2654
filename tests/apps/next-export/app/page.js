export default function Home() {
  return <main><h1>next export home</h1><a href="/about">about</a></main>;
}
