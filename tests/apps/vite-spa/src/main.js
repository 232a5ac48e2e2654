// A client-side router: /about exists only here, so a deep link to it must be
// answered with index.html by the server.
const routes = { "/": "home", "/about": "about page" };
document.querySelector("#app").textContent = routes[location.pathname] ?? "not found";
