export default function About() {
  return <main><h1>next export about</h1></main>;
}
