// The build step render.yaml names: writes the greeting the server answers with.
require("fs").writeFileSync(__dirname + "/greeting.txt", "built by render.yaml's buildCommand\n");
