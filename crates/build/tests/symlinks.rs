//! Detection against source trees that hold symlinks to host files, as a repository can
//! commit them: nothing outside the tree may be read or chosen, while links that stay
//! inside it keep working.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use berth_build::detect::{
    BuildPack, BuildSettings, DetectError, ServePlan, detect, resolve_output_dir, select_root_dir,
};

/// `<tmp>/app` (the source tree) and `<tmp>/host` (files of the host that the tree's
/// links point at, with a manifest and a site that would be picked if followed).
struct Tree {
    _tmp: tempfile::TempDir,
    app: PathBuf,
    host: PathBuf,
}

impl Tree {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path().join("app");
        let host = tmp.path().join("host");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::create_dir_all(host.join("site")).unwrap();
        std::fs::write(
            host.join("package.json"),
            r#"{"scripts": {"start": "node host-secret-marker.js"}}"#,
        )
        .unwrap();
        std::fs::write(host.join("requirements.txt"), "host-secret-marker\n").unwrap();
        std::fs::write(host.join("site/index.html"), "host index").unwrap();
        std::fs::write(host.join("site/secret.txt"), "host secret").unwrap();
        Tree { _tmp: tmp, app, host }
    }

    fn write(&self, name: &str, body: &str) {
        std::fs::write(self.app.join(name), body).unwrap();
    }

    fn link(&self, name: &str, target: &Path) {
        symlink(target, self.app.join(name)).unwrap();
    }
}

#[test]
fn a_package_json_linking_to_a_host_file_is_not_read() {
    let tree = Tree::new();
    tree.write("index.html", "own site");
    tree.link("package.json", &tree.host.join("package.json"));
    let plan = detect(&tree.app, &BuildSettings::default()).unwrap();
    assert_eq!(plan.pack, BuildPack::Static, "{plan:?}");
    assert!(!format!("{plan:?}").contains("host-secret-marker"), "{plan:?}");
}

#[test]
fn a_requirements_txt_linking_to_a_host_file_is_not_read() {
    let tree = Tree::new();
    tree.write("index.html", "own site");
    tree.link("requirements.txt", &tree.host.join("requirements.txt"));
    let plan = detect(&tree.app, &BuildSettings::default()).unwrap();
    assert_eq!(plan.pack, BuildPack::Static, "{plan:?}");
}

#[test]
fn a_relative_link_climbing_out_of_the_tree_is_not_read() {
    let tree = Tree::new();
    tree.write("index.html", "own site");
    symlink("../host/package.json", tree.app.join("package.json")).unwrap();
    let plan = detect(&tree.app, &BuildSettings::default()).unwrap();
    assert_eq!(plan.pack, BuildPack::Static, "{plan:?}");
}

#[test]
fn a_dist_linking_out_of_the_tree_is_not_a_static_site() {
    let tree = Tree::new();
    tree.link("dist", &tree.host.join("site"));
    let err = detect(&tree.app, &BuildSettings::default()).unwrap_err();
    assert!(matches!(err, DetectError::NothingDetected), "{err}");

    // Named explicitly, it is not accepted either.
    let settings = BuildSettings {
        output_dir: Some("dist".into()),
        build_pack: Some("static".into()),
        ..Default::default()
    };
    let err = detect(&tree.app, &settings).unwrap_err();
    assert!(matches!(err, DetectError::NoIndexHtml { .. }), "{err}");
}

#[test]
fn a_build_that_leaves_dist_linking_out_of_the_tree_has_no_output() {
    let tree = Tree::new();
    tree.write(
        "package.json",
        r#"{"scripts": {"build": "ln -s /somewhere dist"}, "devDependencies": {"vite": "5"}}"#,
    );
    let mut plan = detect(&tree.app, &BuildSettings::default()).unwrap();
    assert!(
        matches!(&plan.serve, ServePlan::Static { dir, .. } if dir == "dist"),
        "{plan:?}"
    );
    // What the build step would have done:
    tree.link("dist", &tree.host.join("site"));
    let err = resolve_output_dir(&tree.app, &BuildSettings::default(), &mut plan).unwrap_err();
    assert!(matches!(err, DetectError::NoIndexHtml { .. }), "{err}");
}

#[test]
fn a_dockerfile_linking_out_of_the_tree_does_not_count() {
    let tree = Tree::new();
    std::fs::write(tree.host.join("Dockerfile"), "FROM scratch\n").unwrap();
    tree.link("Dockerfile", &tree.host.join("Dockerfile"));
    assert!(!berth_build::dockerfile::has_dockerfile(&tree.app));
    std::fs::remove_file(tree.app.join("Dockerfile")).unwrap();
    tree.write("Dockerfile", "FROM scratch\n");
    assert!(berth_build::dockerfile::has_dockerfile(&tree.app));
}

#[test]
fn links_inside_the_tree_still_work() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.app.join("site")).unwrap();
    tree.write("site/index.html", "own site");
    symlink("site", tree.app.join("dist")).unwrap();
    let plan = detect(&tree.app, &BuildSettings::default()).unwrap();
    assert!(
        matches!(&plan.serve, ServePlan::Static { dir, .. } if dir == "dist"),
        "{plan:?}"
    );

    let tree = Tree::new();
    tree.write("real.json", r#"{"scripts": {"start": "node own.js"}}"#);
    symlink("real.json", tree.app.join("package.json")).unwrap();
    let plan = detect(&tree.app, &BuildSettings::default()).unwrap();
    assert_eq!(plan.pack, BuildPack::Node);
    assert!(matches!(&plan.serve, ServePlan::Process { command, .. } if command == "node own.js"));
}

#[test]
fn a_root_dir_linking_out_of_the_tree_is_refused() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.app.join("apps")).unwrap();
    tree.link("apps/web", &tree.host);
    let err = select_root_dir(&tree.app, Some("apps/web")).unwrap_err();
    assert!(matches!(err, DetectError::MissingRootDir { .. }), "{err}");
    assert!(err.to_string().contains("root_dir"), "{err}");

    // A link that stays inside the tree is followed to its real folder.
    std::fs::create_dir_all(tree.app.join("packages/site")).unwrap();
    tree.link("site", Path::new("packages/site"));
    let real = select_root_dir(&tree.app, Some("site")).unwrap().unwrap();
    assert_eq!(real, tree.app.join("packages/site").canonicalize().unwrap());
}

#[test]
fn a_root_dir_must_be_a_relative_folder_that_exists() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.app.join("apps/web")).unwrap();
    tree.write("README", "not a folder");
    for bad in ["../host", "/etc", "apps/../../host"] {
        let err = select_root_dir(&tree.app, Some(bad)).unwrap_err();
        assert!(
            matches!(err, DetectError::InvalidSetting { field: "root_dir", .. }),
            "{bad}: {err}"
        );
    }
    for missing in ["apps/api", "README"] {
        let err = select_root_dir(&tree.app, Some(missing)).unwrap_err();
        assert!(matches!(err, DetectError::MissingRootDir { .. }), "{missing}: {err}");
    }
    assert_eq!(select_root_dir(&tree.app, None).unwrap(), None);
    assert_eq!(select_root_dir(&tree.app, Some("./")).unwrap(), None);
    assert!(select_root_dir(&tree.app, Some("apps/web/")).unwrap().is_some());
}
