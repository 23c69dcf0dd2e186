//! The Bicep in `infra/` parses and agrees with the code:
//! - every `.bicep` file parses (pycep-parser from PyPI, pinned, installed
//!   by scripts/test into `.tools/python`; no Bicep compiler installs here);
//! - the app settings it sets are exactly ones Sluice or the Functions host
//!   reads, none holds a key, and Sluice's own configuration check accepts
//!   them as they are (with what the platform adds);
//! - each role the code's calls need is granted, on the scope it calls;
//! - the queue is the one the `steps` function listens on, with the limits
//!   the adapters assume; Flex Consumption runs the `custom` runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).expect(rel)
}

fn bicep_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root().join("infra")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("infra").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "bicep") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn everything() -> String {
    bicep_files().iter().map(|p| std::fs::read_to_string(p).expect("bicep")).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_bicep_file_parses() {
    let pycep = std::env::var("SLUICE_PYCEP_PATH").map(PathBuf::from).unwrap_or_else(|_| root().join(".tools/python"));
    assert!(
        pycep.join("pycep").is_dir(),
        "pycep-parser is not installed at {}; run scripts/test, which installs it from PyPI into .tools/python",
        pycep.display()
    );
    let files = bicep_files();
    assert!(files.len() >= 4, "{files:?}");
    for file in &files {
        let out = std::process::Command::new("python3")
            .env("PYTHONPATH", &pycep)
            .arg("-c")
            .arg(
                "import sys, pathlib; from pycep import BicepParser; BicepParser().parse(file_path=pathlib.Path(sys.argv[1])); print('ok')",
            )
            .arg(file)
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "{} does not parse:\n{}", file.display(), String::from_utf8_lossy(&out.stderr));
    }
}

/// The app settings `infra/main.bicep` sets (`{ name: 'X', value: ... }`
/// lines), with the value when it is a literal.
fn app_settings_with_values() -> Vec<(String, Option<String>)> {
    read("infra/main.bicep")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("{ name: '").filter(|r| r.contains("value:")))
        .filter_map(|r| {
            let name = r.split('\'').next()?.to_string();
            let value = r.split("value: '").nth(1).and_then(|v| v.split('\'').next()).filter(|v| !v.contains("${")).map(str::to_string);
            Some((name, value))
        })
        .collect()
}

fn app_settings() -> Vec<String> {
    app_settings_with_values().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn app_settings_are_read_by_the_code_hold_no_key_and_pass_its_check() {
    let names = app_settings();
    // Read by the Functions host. (Sluice limits glibc's malloc arenas itself: src/host/memory.rs.)
    let host_settings =
        ["AzureWebJobsStorage__accountName", "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"];
    let known: Vec<&str> = sluice::shell::config::SETTINGS.iter().map(|(n, _)| *n).collect();
    assert!(names.len() >= 9, "found {names:?}");
    for name in &names {
        assert!(known.contains(&name.as_str()) || host_settings.contains(&name.as_str()), "infra sets {name}, which nothing reads");
    }
    // Flex Consumption rejects these, and keys have no place: identity only.
    for banned in [
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
        "AzureWebJobsStorage",
        "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        "SLUICE_SERVICEBUS_CONNECTION",
        "SLUICE_TABLE_CONNECTION",
    ] {
        assert!(!names.iter().any(|n| n == banned), "infra sets {banned}");
    }
    let all = everything();
    for key_material in ["listKeys(", "AccountKey=", "SharedAccessKey", "authorizationRules", "primaryConnectionString"] {
        assert!(!all.contains(key_material), "infra handles key material: {key_material}");
    }
    assert!(
        all.contains("disableLocalAuth: true") && all.contains("allowSharedKeyAccess: false") && all.contains("DisableLocalAuth: true")
    );

    // What the platform adds, then Sluice's own check, exactly as `serve` runs it.
    let mut env: BTreeMap<String, String> =
        app_settings_with_values().into_iter().map(|(n, v)| (n.clone(), v.unwrap_or_else(|| format!("value-of-{n}")))).collect();
    env.insert("SLUICE_ALERT_TOKEN".into(), "0123456789abcdef0123456789".into());
    // The parameter azd generates: 40 letters and digits.
    env.insert("SLUICE_API_KEY".into(), "aZ09aZ09aZ09aZ09aZ09aZ09aZ09aZ09aZ09aZ09".into());
    env.insert("ServiceBusConnection__fullyQualifiedNamespace".into(), "ns.servicebus.windows.net".into());
    for (k, v) in [
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "41000"),
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:41001/msi/token"),
        ("IDENTITY_HEADER", "platform"),
        ("WEBSITE_HOSTNAME", "sluice.azurewebsites.net"),
        // The registration's settings (`tenant().tenantId`, the module's client id,
        // `environment().authentication.loginEndpoint`, which ends in a slash).
        ("SLUICE_ENTRA_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
        ("SLUICE_ENTRA_CLIENT_ID", "0f4a1c2e-1111-2222-3333-444455556666"),
        ("SLUICE_ENTRA_AUTHORITY", "https://login.microsoftonline.com/"),
        // `environment().name` in the public cloud (Microsoft Learn, "Deployment functions for Bicep",
        // environment(): the names `az cloud list` gives, `AzureCloud` for global Azure).
        ("SLUICE_AZURE_CLOUD", "AzureCloud"),
        // `credentialRules.?… ?? …` with the parameters' defaults (no channel secrets).
        ("SLUICE_SPEC_SETTINGS", ""),
        ("SLUICE_AKS_API_SERVERS", ""),
        ("SLUICE_APP_CONFIG_STORES", ""),
        ("SLUICE_GITHUB_API_URLS", ""),
        ("SLUICE_AZURE_DEVOPS_URLS", ""),
        // `string(retentionDays)` at the parameter's default.
        ("SLUICE_RETENTION_DAYS", "400"),
        // `empty(windows) ? '' : string(windows)` at the default, `{}`.
        ("SLUICE_WINDOWS", ""),
        // `signIn == 'none' ? 'true' : 'false'` at the default, create.
        ("SLUICE_TRUST_NAMES", "false"),
    ] {
        env.insert(k.into(), v.into());
    }
    let config = sluice::shell::config::from_env(&|k| env.get(k).cloned(), sluice::shell::config::Mode::Serve)
        .unwrap_or_else(|p| panic!("the deployed settings do not start serve: {p:?}"));
    assert!(
        matches!(config.store, sluice::shell::config::StoreKind::Table { connection: None, account: Some(_), .. }),
        "{:?}",
        config.store
    );
    assert!(matches!(config.queue, sluice::shell::config::QueueKind::ServiceBusIdentity { .. }), "{:?}", config.queue);
    assert!(!config.require_principal, "no App Service authentication: Sluice checks the tokens itself");
    assert_eq!(
        config.issuers.iter().map(|i| i.issuer.as_str()).collect::<Vec<_>>(),
        ["https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"],
        "Entra's v2.0 tokens of the tenant"
    );
    assert!(config.data_dir.starts_with(std::env::temp_dir()), "nothing in the read-only app root");
    assert_eq!(config.retention, chrono::TimeDelta::days(400));
    let bicep = read("infra/main.bicep");
    assert!(
        bicep.contains("@minValue(30)\n@maxValue(3650)\nparam retentionDays int = 400"),
        "the Bicep bounds the retention as the code does"
    );
}

/// The built-in role definitions the code's calls need (Azure RBAC built-in roles).
const ROLES: &[(&str, &str, &str)] = &[
    // (role, id, file it must be granted in: on the scope the code calls)
    ("Storage Blob Data Owner", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "infra/main.bicep"),
    ("Storage Table Data Contributor", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "infra/main.bicep"),
    ("Azure Service Bus Data Receiver", "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0", "infra/main.bicep"),
    ("Azure Service Bus Data Sender", "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39", "infra/main.bicep"),
    ("Monitoring Metrics Publisher", "3913510d-42f4-4e42-8a64-420c390055eb", "infra/main.bicep"),
    ("Website Contributor", "de139f84-1756-47ae-9be6-808fbbe84772", "infra/modules/target-access.bicep"),
    ("Monitoring Reader", "43d0d8ad-25c7-4714-9337-8ba259a9fe05", "infra/modules/target-access.bicep"),
    ("Log Analytics Reader", "73c42c96-874c-492b-b04d-ab87d138a893", "infra/modules/workspace-reader.bicep"),
    ("Key Vault Secrets User", "4633458b-17de-408a-b874-0445c86b69e6", "infra/modules/keyvault-reader.bicep"),
    ("Container Apps Contributor", "358470bc-b998-42bd-ab17-a7e34c199c0f", "infra/modules/router-access.bicep"),
    ("CDN Profile Contributor", "ec156ff8-a8d1-4d15-830c-5b80698ca432", "infra/modules/router-access.bicep"),
    ("API Management Service Contributor", "312a565d-c81f-4fd8-895a-4e21e48d571c", "infra/modules/router-access.bicep"),
    ("App Configuration Data Owner", "5ae67dd6-50cb-40e7-96ff-dc2bfa4b606b", "infra/modules/router-access.bicep"),
    ("Azure Kubernetes Service RBAC Writer", "a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb", "infra/modules/router-access.bicep"),
];

/// Every router in the registry has its role in the router module, granted
/// on the target resource it calls (a `scope:` of that resource), keyed by
/// the provider name the spec uses.
#[test]
fn every_router_is_granted_its_role_on_its_own_target() {
    let module = read("infra/modules/router-access.bicep");
    for (provider, _) in sluice::ports::traffic::PROVIDERS.iter().filter(|(p, _)| *p != "local") {
        assert!(module.contains(&format!("  {provider}: '")), "no role for {provider}");
        assert!(
            module.contains(&format!("= if (target.provider == '{provider}') {{\n  scope: ")),
            "{provider}'s role is not scoped to its resource"
        );
    }
    assert!(read("infra/main.bicep").contains("module routerAccess 'modules/router-access.bicep' = [for target in routerTargets:"));
}

#[test]
fn each_role_the_code_needs_is_granted_where_it_calls() {
    for (role, id, file) in ROLES {
        assert!(read(file).contains(id), "{file} does not grant {role} ({id})");
    }
    let main = read("infra/main.bicep");
    // Own resources: scoped to the resource, never to the whole group.
    for (resource, role) in
        [("storage", "storageTableDataContributor"), ("stepsQueue", "serviceBusDataSender"), ("stepsQueue", "serviceBusDataReceiver")]
    {
        assert!(main.contains(&format!("scope: {resource}\n  name: guid({resource}.id, app.id, roles.{role})")), "{role} on {resource}");
    }
    // The targets' scopes: one module per target group, per workspace, and the vault.
    assert!(main.contains("module targetAccess 'modules/target-access.bicep' = [for group in targetGroups:"));
    // No target by default: Website Contributor on Sluice's own group would reach Sluice itself.
    assert!(main.contains("param targetResourceGroups array = []\n") && main.contains("param targetResourceGroupList string = ''\n"));
    assert!(main.contains("module workspaceAccess 'modules/workspace-reader.bicep' = [for ws in analyticsWorkspaces:"));
    assert!(main.contains("module keyVaultAccess 'modules/keyvault-reader.bicep' = if (!empty(keyVault))"));
    // Nothing broader than needed: no Owner or Contributor anywhere.
    let all = everything();
    for broad in ["8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "b24988ac-6180-42a0-ab88-20f7382dd24c"] {
        assert!(!all.contains(broad), "a broad role ({broad}) is granted");
    }
}

#[test]
fn flex_consumption_runs_the_custom_handler_and_signs_people_in() {
    let main = read("infra/main.bicep");
    assert!(main.contains("sku: { name: 'FC1', tier: 'FlexConsumption' }"));
    assert!(main.contains("runtime: { name: 'custom', version: '1.0' }"));
    assert!(main.contains("authentication: { type: 'SystemAssignedIdentity' }"), "the package container is read with the identity");
    assert!(!main.contains("ftpsState") && !main.contains("'Microsoft.Web/sites/slots@"), "Flex has no FTP and no deployment slots");
    // Flex Consumption's lowest instance limit is 40 (Learn, "Flex Consumption plan hosting", instance
    // count limits; Azure-Samples' Flex templates declare @minValue(40)): a lower value is refused here.
    let limit = main.split("param maximumInstanceCount").next().and_then(|before| before.rsplit("\n\n").next()).unwrap_or_default();
    assert!(limit.contains("@minValue(40)") && limit.contains("@maxValue(1000)"), "{limit}");
    // The app reads its package from the container, which it names only as text: an explicit dependency.
    let app = main.split("resource app 'Microsoft.Web/sites@").nth(1).and_then(|r| r.split("\n}\n").next()).unwrap_or_default();
    assert!(app.contains("dependsOn: [packages]"), "the app does not wait for its package container");
    // Sluice checks tokens itself: no App Service authentication in front (its Return401 would
    // answer the dashboard's sign-in). The registration is made by the sign-in module by default.
    assert!(!main.contains("authsettingsV2"));
    assert!(main.contains("@allowed(['create', 'existing', 'none'])\nparam signIn string = 'create'"));
    assert!(main.contains("module registration 'modules/sign-in.bicep' = if (signIn == 'create')"));
    let alerts: serde_json::Value = serde_json::from_str(&read("functions/alerts/function.json")).expect("json");
    assert_eq!(alerts["bindings"][0]["authLevel"], "anonymous", "no function key for the action group to fetch at deploy time");
    // The dashboard's page holds no data and is where an Entra sign-in comes back to, without a key.
    let dashboard: serde_json::Value = serde_json::from_str(&read("functions/dashboard/function.json")).expect("json");
    assert_eq!(dashboard["bindings"][0]["authLevel"], "anonymous");
    // Every other function too: Sluice checks its own key (SLUICE_API_KEY), or a token instead.
    for name in ["api", "doctor", "gate", "metrics", "pipelines", "releases", "report", "waves"] {
        let f: serde_json::Value = serde_json::from_str(&read(&format!("functions/{name}/function.json"))).expect("json");
        assert_eq!(f["bindings"][0]["authLevel"], "anonymous", "{name}");
    }
    assert!(main.contains("/api/alerts?token=${alertToken}") && main.contains("useCommonAlertSchema: true"));
    // With sign-in the action group's webhook is a secure one: no token in its URL.
    let secure = main.split("var secureWebhook = {").nth(1).and_then(|r| r.split("\n}\n").next()).unwrap_or_default();
    assert!(secure.contains("serviceUri: 'https://${app.properties.defaultHostName}/api/alerts'\n"), "{secure}");
    for field in ["useAadAuth: true", "objectId: entraObjectId", "identifierUri: entraIdentifierUri", "tenantId: tenant().tenantId"] {
        assert!(secure.contains(field), "{field} in {secure}");
    }
    assert!(main.contains("webhookReceivers: [signIn == 'none' ? tokenInUrl : secureWebhook]"));
}

/// The registration the sign-in module makes holds what the code checks:
/// Sluice's app roles by their values (`Role::value`), the scope the
/// dashboard asks for, v2.0 tokens, the dashboard as a single-page app's
/// redirect URI, and the action groups' role assigned to their service
/// principal (Learn, "Action groups", secure webhook: app id
/// 461e8683-5575-4561-ac7f-899cc907d62a, role ActionGroupsSecureWebhook).
#[test]
fn the_sign_in_module_registers_what_sluice_checks() {
    let module = read("infra/modules/sign-in.bicep");
    assert!(module.contains("extension microsoftGraphV1"));
    let config: serde_json::Value = serde_json::from_str(&read("infra/bicepconfig.json")).expect("json");
    assert_eq!(config["extensions"]["microsoftGraphV1"], "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:1.0.0");
    for role in sluice::domain::access::Role::ALL {
        assert!(module.contains(&format!("{{ value: '{}', members: [", role.value())), "the module defines {role}");
    }
    let scope = sluice::ports::identity::BrowserSignIn::SCOPE;
    assert!(module.contains(&format!("value: '{scope}'")) && module.contains("guid(uniqueName, 'access_as_user')"));
    assert!(module.contains("requestedAccessTokenVersion: 2"), "Sluice accepts v2.0 tokens only");
    assert!(module.contains("spa: { redirectUris: [dashboardUrl] }"));
    assert!(read("infra/main.bicep").contains("dashboardUrl: 'https://${app.properties.defaultHostName}/api/dashboard'"));
    assert!(module.contains("var actionGroupsAppId = '461e8683-5575-4561-ac7f-899cc907d62a'"));
    let assignment = module.split("resource actionGroupsMayAlert").nth(1).and_then(|r| r.split("\n}\n").next()).unwrap_or_default();
    assert!(
        assignment.contains("principalId: actionGroups.id")
            && assignment.contains("appRoleId: guid(uniqueName, 'ActionGroupsSecureWebhook')")
    );
    // Approving is for people: the role admits users only, and only a user deployer is made Admin.
    assert!(module.contains("{ value: 'Sluice.Approver', members: ['User'],"));
    assert!(module.contains("resource deployerIsAdmin 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (adminPrincipalType == 'User')"));
    // The secure webhook's creator must own the registration (Learn, "Action groups", secure webhook).
    assert!(module.contains("owners: { relationships: [adminPrincipalId] }"));
    // Graph takes no pre-authorization of a scope made in the same request: a second pass makes it,
    // with api://{appId}, which the action group names and Sluice accepts as an audience.
    let first = module.split("resource registration 'Microsoft.Graph/applications@v1.0' = {").nth(1).and_then(|r| r.split("\n}\n").next());
    let second =
        module.split("resource registrationApi 'Microsoft.Graph/applications@v1.0' = {").nth(1).and_then(|r| r.split("\n}\n").next());
    let (first, second) = (first.unwrap_or_default(), second.unwrap_or_default());
    assert!(!first.contains("preAuthorizedApplications") && second.contains("delegatedPermissionIds: [scopeId]"), "{second}");
    assert!(second.contains("uniqueName: uniqueName") && second.contains("identifierUris: ['api://${registration.appId}']"));
    assert!(module.contains("output identifierUri string = registrationApi.identifierUris[0]"));
    let audiences = sluice::ports::identity::IssuerConfig::entra("https://login.microsoftonline.com", "t", "client").audiences;
    assert!(audiences.contains(&"api://client".to_string()), "{audiences:?}");
}

#[test]
fn the_queue_matches_the_trigger_and_the_adapters() {
    let bicep = read("infra/main.bicep");
    let steps: serde_json::Value = serde_json::from_str(&read("functions/steps/function.json")).expect("json");
    let queue = steps["bindings"][0]["queueName"].as_str().expect("queueName");
    let connection = steps["bindings"][0]["connection"].as_str().expect("connection");
    assert!(bicep.contains(&format!("var queueName = '{queue}'")), "the Bicep queue is not {queue}");
    assert!(app_settings().contains(&format!("{connection}__fullyQualifiedNamespace")), "the trigger's identity connection");
    assert!(bicep.contains(&format!("maxDeliveryCount: {}", sluice::ports::queue::MAX_DELIVERY_COUNT)));
    assert!(bicep.contains("requiresDuplicateDetection: true"));
    assert!(bicep.contains("duplicateDetectionHistoryTimeWindow: 'PT10M'"));
    // The host's trigger holds the locks with the queue's own lockDuration; Sluice only sends, so it sets none.
    assert!(bicep.contains("lockDuration: 'PT1M'") && !bicep.contains("SLUICE_SERVICEBUS_LOCK_SECONDS"));
}

#[test]
fn azd_provisions_this_bicep_and_deploys_the_package() {
    let azure = read("azure.yaml");
    assert!(azure.contains("provider: bicep") && azure.contains("path: infra") && azure.contains("module: main"));
    assert!(azure.contains("postprovision:") && azure.contains("shell: sh") && azure.contains("run: scripts/azd-deploy"));
    // Every parameter the file sets exists in main.bicep, and every required one is set.
    let params: serde_json::Value = serde_json::from_str(&read("infra/main.parameters.json")).expect("json");
    let main = read("infra/main.bicep");
    for name in params["parameters"].as_object().expect("parameters").keys() {
        assert!(main.contains(&format!("param {name} ")), "main.parameters.json sets {name}, which main.bicep lacks");
    }
    // ... or azd generates it: a required string parameter left out of the file, with
    // `@metadata({azd: {type: 'generate'}})`, is generated once and kept in the environment's
    // config (Azure/azure-dev, cli/azd/pkg/infra/provisioning/bicep/bicep_provider.go,
    // AzdMetadataTypeGenerate; a value in the file would win over it).
    let mut decorators = String::new();
    for line in main.lines() {
        if let Some(rest) = line.strip_prefix("param ").filter(|_| !line.contains('=')) {
            let name = rest.split_whitespace().next().expect("name");
            let generated = decorators.contains("type: 'generate'");
            assert!(
                params["parameters"].get(name).is_some() != generated,
                "{name} is required: main.parameters.json sets it, or azd generates it (never both)"
            );
        }
        decorators = match line.starts_with('@') || line.starts_with(' ') || line.starts_with('}') {
            true => decorators + line + "\n",
            false => String::new(),
        };
    }
    assert!(main.contains("param apiKey string"), "Sluice's key is a parameter azd generates");
    assert!(Path::new(&root().join("scripts/azd-deploy")).exists());
}

/// The template's outputs, as `(name, expression)`.
fn outputs(main: &str) -> Vec<(String, String)> {
    main.lines()
        .filter_map(|l| l.strip_prefix("output "))
        .filter_map(|rest| {
            let (head, expression) = rest.split_once(" = ")?;
            Some((head.split_whitespace().next()?.to_string(), expression.trim().to_string()))
        })
        .collect()
}

/// A command that records how it was called (one line in `$SHIM_LOG`);
/// `az` fails its first `$AZ_FAILS` zip deploys, as a publish does while
/// the app's new role assignment is not yet in effect; `curl` (when it is
/// shimmed) fails as for a release that does not exist.
const SHIM: &str = r#"#!/bin/sh
echo "$(basename "$0") $*" >> "$SHIM_LOG"
case "$(basename "$0") $*" in
  *config-zip*)
    n=$(( $(cat "$SHIM_LOG.zip" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$SHIM_LOG.zip"
    if [ "$n" -le "${AZ_FAILS:-0}" ]; then echo "ERROR: (Forbidden) the app cannot read its package" >&2; exit 1; fi ;;
  curl*) exit 22 ;;
esac
"#;

/// Runs the post-provision hook as azd does (Azure/azure-dev, cli/azd):
/// `/bin/sh -c <run>` (pkg/tools/bash) from the folder of azure.yaml
/// (cmd/middleware/hooks.go: the project's path), with the OS environment
/// plus the azd environment (pkg/ext/hooks_runner.go). That environment
/// holds each template output under the name written in the template,
/// casing kept (pkg/infra/provisioning/deployment.go,
/// OutputParametersFromArmOutputs: "the casing of the output parameter
/// names will match the casing in the provided templateOutputs"), and
/// AZURE_ENV_NAME, AZURE_SUBSCRIPTION_ID, AZURE_LOCATION and the
/// AZURE_RESOURCE_GROUP azd sets for a resource-group deployment
/// (pkg/infra/provisioning/bicep/bicep_provider.go, ensureResourceGroup).
/// The project is azure.yaml, the hook and Cargo.toml; `shimmed` tools
/// record their calls, the rest are the machine's.
struct Hook {
    project: tempfile::TempDir,
    shims: tempfile::TempDir,
}

impl Hook {
    fn new(shimmed: &[&str]) -> Hook {
        let (project, shims) = (tempfile::tempdir().expect("project"), tempfile::tempdir().expect("shims"));
        std::fs::create_dir_all(project.path().join("scripts")).expect("scripts");
        for file in ["azure.yaml", "scripts/azd-deploy", "Cargo.toml"] {
            std::fs::copy(root().join(file), project.path().join(file)).expect(file);
        }
        for tool in shimmed {
            std::fs::write(shims.path().join(tool), SHIM).expect("shim");
            std::fs::set_permissions(shims.path().join(tool), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("mode");
        }
        Hook { project, shims }
    }

    fn run(&self, azd_env: &[(String, String)], extra: &[(&str, &str)]) -> (std::process::Output, Vec<String>) {
        let log = self.project.path().join("calls.log");
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(log.with_extension("log.zip"));
        let run = read("azure.yaml").lines().find_map(|l| l.trim().strip_prefix("run: ").map(str::to_string)).expect("the hook's run");
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&run)
            .current_dir(self.project.path())
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.shims.path().display()))
            .env("HOME", self.project.path())
            .env("SHIM_LOG", &log)
            .envs(azd_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .output()
            .expect("sh runs the hook");
        let calls = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
        (output, calls)
    }
}

#[test]
fn the_post_provision_hook_deploys_to_the_app_azd_provisioned() {
    let main = read("infra/main.bicep");
    let outputs = outputs(&main);
    // The output that holds the function app's name, whatever it is called: the hook must deploy to its value.
    let app_output = outputs.iter().find(|(_, e)| e == "app.name").map(|(n, _)| n.clone()).expect("an output gives the app's name");
    let app = "sluice-sluice-x7k2pq";
    let mut azd_env: Vec<(String, String)> = [
        ("AZURE_ENV_NAME", "sluice-prod"),
        ("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000001"),
        ("AZURE_LOCATION", "westeurope"),
        ("AZURE_RESOURCE_GROUP", "rg-sluice"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let provisioned: Vec<(String, String)> = outputs
        .iter()
        .map(|(name, _)| (name.clone(), if *name == app_output { app.to_string() } else { format!("value-of-{name}") }))
        .collect();
    azd_env.extend(provisioned.clone());
    let deploy = |zip: &str| format!("az functionapp deployment source config-zip -g rg-sluice -n {app} --src {zip}");

    // By default the release of this version (Cargo.toml), checked against its SHA256SUMS; nothing is built.
    let version = env!("CARGO_PKG_VERSION");
    let server = ReleaseServer::start(version);
    let package = format!("sluice-{version}-functionapp.zip");
    let hook = Hook::new(&["az", "cargo", "python3"]);
    let release = [("SLUICE_RELEASE_URL", server.url.as_str()), ("AZ_FAILS", "1"), ("SLUICE_DEPLOY_RETRY_SECONDS", "0")];
    let (out, calls) = hook.run(&azd_env, &release);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the hook stopped azd up: {stderr}");
    let zip_deploy = deploy(&format!("dist/{package}"));
    assert_eq!(calls, [zip_deploy.as_str(), &zip_deploy], "a publish refused while the role assignment applies is tried again");
    assert!(stderr.contains("attempt 1 failed"), "{stderr}");
    assert_eq!(std::fs::read(hook.project.path().join("dist").join(&package)).expect("downloaded"), b"PK the package");

    // A package that does not match the release's SHA256SUMS is never deployed.
    std::fs::write(server.file(&package), b"PK a package someone swapped").expect("swap");
    let (out, calls) = hook.run(&azd_env, &release);
    assert!(!out.status.success() && calls.is_empty(), "{calls:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match the release's SHA256SUMS; nothing deployed"));
    assert!(!hook.project.path().join("dist").join(&package).exists(), "the swapped package is not left behind");

    // Without SLUICE_RELEASE_URL, the releases of the repository this checkout came from.
    let hook = Hook::new(&["az", "cargo", "python3", "curl"]);
    let git = |args: &[&str]| std::process::Command::new("git").args(args).current_dir(hook.project.path()).output().expect("git");
    git(&["init", "-q"]);
    git(&["remote", "add", "origin", "git@github.com:contoso/sluice.git"]);
    let (out, calls) = hook.run(&azd_env, &[]);
    let wanted = format!("https://github.com/contoso/sluice/releases/download/v{version}/{package}");
    assert!(!out.status.success() && calls.iter().any(|c| c.starts_with("curl ") && c.ends_with(&wanted)), "{calls:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLUICE_PACKAGE_SOURCE=source builds it here"));

    // Built here on request: zig from PyPI, `sluice package`, the same deploy.
    let hook = Hook::new(&["az", "cargo", "python3"]);
    let (out, calls) = hook.run(&azd_env, &[("SLUICE_PACKAGE_SOURCE", "source"), ("SLUICE_DEPLOY_RETRY_SECONDS", "0")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let built = deploy("dist/sluice-functionapp.zip");
    assert_eq!(calls, ["python3 -c import ziglang", "cargo run --release --locked -- package --out dist", built.as_str()]);

    // A publish that never succeeds fails azd up loudly, after the attempts it was given.
    let failing =
        [("SLUICE_PACKAGE_SOURCE", "source"), ("AZ_FAILS", "99"), ("SLUICE_DEPLOY_RETRY_SECONDS", "0"), ("SLUICE_DEPLOY_ATTEMPTS", "3")];
    let (out, calls) = hook.run(&azd_env, &failing);
    assert!(!out.status.success());
    assert_eq!(calls.iter().filter(|c| **c == built).count(), 3, "{calls:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not deployed after 3 attempts"));

    // Without the outputs (run outside azd), it names what is missing and calls nothing.
    let without: Vec<(String, String)> = azd_env.iter().filter(|(k, _)| !provisioned.iter().any(|(n, _)| n == k)).cloned().collect();
    let (out, calls) = hook.run(&without, &[]);
    assert!(!out.status.success() && calls.is_empty(), "{calls:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&app_output), "names the output it needs");
}

/// A release as `.github/workflows/release.yml` lays it out, served over
/// loopback: `/releases/v{version}/{file}` (GitHub's
/// `releases/download/v{version}/{file}`).
struct ReleaseServer {
    url: String,
    dir: tempfile::TempDir,
    version: String,
}

impl ReleaseServer {
    const TARGETS: [&'static str; 4] =
        ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu", "aarch64-apple-darwin", "x86_64-apple-darwin"];

    /// Each archive holds a `sluice` that says which target it was built
    /// for; the package is a stand-in zip.
    fn start(version: &str) -> ReleaseServer {
        let dir = tempfile::tempdir().expect("dir");
        let release = dir.path().join(format!("releases/v{version}"));
        std::fs::create_dir_all(&release).expect("release dir");
        for target in Self::TARGETS {
            let build = dir.path().join(target);
            std::fs::create_dir_all(&build).expect("build dir");
            std::fs::write(build.join("sluice"), format!("#!/bin/sh\necho \"sluice {version} ({target})\"\n")).expect("exe");
            std::fs::set_permissions(build.join("sluice"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("mode");
            let archive = release.join(format!("sluice-{version}-{target}.tar.gz"));
            let tar = std::process::Command::new("tar").arg("-czf").arg(&archive).arg("-C").arg(&build).arg("sluice").status();
            assert!(tar.expect("tar runs").success());
        }
        std::fs::write(release.join(format!("sluice-{version}-functionapp.zip")), b"PK the package").expect("package");
        // install.sh stamped as the release workflow's publish job does.
        let stamped = read("scripts/install.sh").replace("__SLUICE_REPOSITORY__", "contoso/sluice").replace("__SLUICE_VERSION__", version);
        std::fs::write(release.join("install.sh"), stamped).expect("install.sh");
        let sums = std::process::Command::new("sh")
            .arg("-c")
            .arg("sha256sum -- * > ../SHA256SUMS && mv ../SHA256SUMS .")
            .current_dir(&release)
            .status();
        assert!(sums.expect("sha256sum runs").success());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/releases", listener.local_addr().expect("addr"));
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                Self::answer(&root, stream);
            }
        });
        ReleaseServer { url, dir, version: version.to_string() }
    }

    fn answer(root: &Path, mut stream: std::net::TcpStream) {
        use std::io::{BufRead, Write};
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        if reader.read_line(&mut line).is_err() {
            return;
        }
        // The rest of the request head, up to its blank line.
        let mut header = String::new();
        while reader.read_line(&mut header).map(|n| n > 2).unwrap_or(false) {
            header.clear();
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
        let file = (!path.contains("..")).then(|| std::fs::read(root.join(&path)).ok()).flatten();
        let (status, body) = match file {
            Some(body) => ("200 OK", body),
            None => ("404 Not Found", b"not found".to_vec()),
        };
        let head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
        let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("releases/v{}/{name}", self.version))
    }
}

/// Runs scripts/install.sh as a user would, on a machine that `uname` says
/// is `os`/`arch`, into `home/bin`.
fn install(server: &ReleaseServer, home: &Path, os: &str, arch: &str) -> (bool, String) {
    install_with(server, home, os, arch, &[])
}

fn install_with(server: &ReleaseServer, home: &Path, os: &str, arch: &str, extra: &[(&str, &str)]) -> (bool, String) {
    let shims = home.join("shims");
    std::fs::create_dir_all(&shims).expect("shims");
    let uname = "#!/bin/sh\ncase \"$1\" in -s) echo \"$FAKE_OS\" ;; -m) echo \"$FAKE_ARCH\" ;; *) exit 2 ;; esac\n";
    std::fs::write(shims.join("uname"), uname).expect("uname");
    std::fs::set_permissions(shims.join("uname"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("mode");
    let out = std::process::Command::new("sh")
        .arg(root().join("scripts/install.sh"))
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", shims.display()))
        .env("HOME", home)
        .env("FAKE_OS", os)
        .env("FAKE_ARCH", arch)
        .env("SLUICE_VERSION", &server.version)
        .env("SLUICE_RELEASE_URL", &server.url)
        .env("SLUICE_INSTALL_DIR", home.join("bin"))
        .envs(extra.iter().copied())
        .output()
        .expect("sh runs install.sh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// What `home/bin/sluice` says it is, if it is there, and what else is in `home/bin`.
fn installed(home: &Path) -> (Option<String>, Vec<String>) {
    let exe = home.join("bin/sluice");
    let said = std::process::Command::new(&exe).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let mut names: Vec<String> = std::fs::read_dir(home.join("bin"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    (said, names)
}

#[test]
fn the_install_script_installs_the_right_build_checked_and_never_half() {
    let v = "9.8.7";
    let server = ReleaseServer::start(v);
    let home = tempfile::tempdir().expect("home");
    for (os, arch, target) in [
        ("Linux", "x86_64", "x86_64-unknown-linux-gnu"),
        ("Linux", "aarch64", "aarch64-unknown-linux-gnu"),
        ("Darwin", "x86_64", "x86_64-apple-darwin"),
        ("Darwin", "arm64", "aarch64-apple-darwin"),
    ] {
        let (ok, said) = install(&server, home.path(), os, arch);
        assert!(ok, "{os} {arch}: {said}");
        assert_eq!(installed(home.path()), (Some(format!("sluice {v} ({target})")), vec!["sluice".to_string()]), "{os} {arch}");
    }

    // A download that does not match SHA256SUMS is refused, and the installed sluice stays as it was.
    std::fs::write(server.file(&format!("sluice-{v}-x86_64-unknown-linux-gnu.tar.gz")), b"tampered").expect("tamper");
    let (ok, said) = install(&server, home.path(), "Linux", "x86_64");
    assert!(!ok && said.contains("does not match SHA256SUMS") && said.contains("nothing installed"), "{said}");
    let kept = (Some(format!("sluice {v} (aarch64-apple-darwin)")), vec!["sluice".to_string()]);
    assert_eq!(installed(home.path()), kept, "untouched, nothing left beside it");

    // A platform with no build, and a version with no release, say so and change nothing.
    let (ok, said) = install(&server, home.path(), "FreeBSD", "x86_64");
    assert!(!ok && said.contains("no release is built for FreeBSD"), "{said}");
    std::fs::remove_file(server.file("SHA256SUMS")).expect("rm");
    let (ok, said) = install(&server, home.path(), "Darwin", "arm64");
    assert!(!ok && said.contains("could not download") && said.contains("SHA256SUMS"), "{said}");
    assert_eq!(installed(home.path()), kept);

    // A server that accepts and never answers fails the download after SLUICE_DOWNLOAD_SECONDS.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent = ReleaseServer { url: format!("http://{}/releases", hanging.local_addr().expect("addr")), ..server };
    let started = std::time::Instant::now();
    let (ok, said) = install_with(&silent, home.path(), "Linux", "x86_64", &[("SLUICE_DOWNLOAD_SECONDS", "2")]);
    assert!(!ok && said.contains("could not download"), "{said}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "it gave up: {:?}", started.elapsed());
    assert_eq!(installed(home.path()), kept);
}

/// The GitHub action's install step (`install-cli.sh`): used from the Sluice
/// repository it takes the release of its own ref from where the runner
/// checked it out (`$GITHUB_ACTION_PATH` under `_actions/OWNER/REPO/REF/`);
/// it runs the release's install.sh only if SHA256SUMS vouches for it, and
/// puts the install folder on the job's PATH (`$GITHUB_PATH`).
#[test]
fn the_actions_install_step_installs_its_own_release_and_checks_the_installer() {
    let server = ReleaseServer::start("9.8.7");
    let runner = tempfile::tempdir().expect("runner");
    let script = root().join("examples/pipelines/github/actions/sluice/install-cli.sh");
    let action_path = "/home/runner/work/_actions/contoso/sluice/v9.8.7/examples/pipelines/github/actions/sluice";
    let step = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new("bash")
            .arg(&script)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", runner.path())
            .env("GITHUB_PATH", runner.path().join("github_path"))
            .envs(env.iter().copied())
            .output()
            .expect("bash runs");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, which) = step(&["which"], &[("GITHUB_ACTION_PATH", action_path)]);
    assert!(ok, "{which}");
    assert_eq!(which.lines().collect::<Vec<_>>(), ["version=9.8.7", "url=https://github.com/contoso/sluice/releases/download"]);
    // A copy in the team's own repository must be told which release.
    let (ok, said) = step(&["which"], &[("GITHUB_ACTION_PATH", "/home/runner/work/orders/orders/.github/actions/sluice")]);
    assert!(!ok && said.contains("set its inputs sluice-version and release-url"), "{said}");

    let dir = runner.path().join(".sluice-cli/9.8.7");
    let dir_text = dir.display().to_string();
    let told = [("SLUICE_VERSION", "9.8.7"), ("SLUICE_RELEASE_URL", server.url.as_str())];
    let (ok, said) = step(&["install", &dir_text], &told);
    assert!(ok, "{said}");
    let ran = std::process::Command::new(dir.join("sluice")).output().expect("installed sluice runs");
    assert!(String::from_utf8_lossy(&ran.stdout).starts_with("sluice 9.8.7 ("), "the build for this machine");
    let path = std::fs::read_to_string(runner.path().join("github_path")).expect("GITHUB_PATH");
    assert_eq!(path.trim(), dir_text);

    // An installer SHA256SUMS does not vouch for is never run.
    let fresh = runner.path().join(".sluice-cli/again");
    let stamped = std::fs::read_to_string(server.file("install.sh")).expect("install.sh");
    std::fs::write(server.file("install.sh"), format!("{stamped}\ntouch \"$HOME/pwned\"\n")).expect("swap");
    let (ok, said) = step(&["install", &fresh.display().to_string()], &told);
    assert!(!ok && said.contains("does not match the release's SHA256SUMS"), "{said}");
    assert!(!fresh.join("sluice").exists() && !runner.path().join("pwned").exists());
}
