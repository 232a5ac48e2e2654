document.getElementById("root").textContent = "cra app built";
