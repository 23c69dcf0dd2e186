// Sluice on Azure Functions Flex Consumption: the `sluice` custom handler
// (runtime `custom` 1.0), its state in Table Storage, its steps on a Service
// Bus queue, its logs in Application Insights, an action group whose webhook
// is Sluice's alert endpoint (Common Alert Schema), and Sluice's app
// registration in Entra ID, whose tokens Sluice checks (signIn).
//
// Identity only: no account key, no SAS rule, no secret in an output. The
// function app's system-assigned identity holds exactly the roles the code
// uses, on Sluice's own resources here and on the targets' scopes through
// the modules (see README, "Deploy to Azure").
//
//   azd up                     (azure.yaml: provision, then package and deploy)
// or
//   az deployment group create -g <rg> -f infra/main.bicep -p prefix=<p> alertToken=<t> apiKey=<k> \
//     adminPrincipalId="$(az ad signed-in-user show --query id -o tsv)"
//   cargo run --release -- package --out dist
//   az functionapp deployment source config-zip -g <rg> -n <app> --src dist/sluice-functionapp.zip

@description('Prefix of every resource name (lower-case letters and digits).')
@minLength(3)
@maxLength(11)
param prefix string

param location string = resourceGroup().location

@description('Shared secret the alert webhook requires (at least 16 characters).')
@secure()
@minLength(16)
param alertToken string

// Sluice's own key: every HTTP function is anonymous at the Functions host (a caller with a token
// needs nothing else) and Sluice asks this key where no token stands in for it. azd generates it
// once and keeps it in the environment's config (Azure/azure-dev, bicep_provider.go: a required
// parameter with `azd: {type: 'generate'}` is generated once and saved as infra.parameters.apiKey).
@description('Sluice\'s own key (SLUICE_API_KEY), at least 24 random letters and digits; azd generates it.')
@secure()
@minLength(24)
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 40
      noSpecial: true
    }
  }
})
param apiKey string

@description('Resource groups holding the apps Sluice routes traffic for and reads metrics of: Website Contributor and Monitoring Reader there. None by default: never Sluice\'s own group, where those roles would reach Sluice itself.')
param targetResourceGroups array = []

@description('The same as a comma-separated list, for azd (`azd env set SLUICE_TARGET_RESOURCE_GROUPS rg-orders,rg-payments`): azd fills parameters from strings only.')
param targetResourceGroupList string = ''

@description('The resources Sluice routes traffic on, one per router ({provider, resourceGroup, name}: provider as in the spec, name of the app, container app, Front Door profile, API Management service, App Configuration store or AKS cluster): the one role that router needs, on that resource. See modules/router-access.bicep.')
param routerTargets array = []

@description('Log Analytics workspaces the specs query ({resourceGroup, name}): Log Analytics Reader on each. Application Insights queries need the same on the workspace behind the component.')
param analyticsWorkspaces array = []

@description('A Key Vault whose secrets the channel settings reference ({resourceGroup, name}; empty: none): Key Vault Secrets User on it.')
param keyVault object = {}

@description('Secrets the backlog and notification channels of your specs name, as app settings: e.g. {"GITHUB_TOKEN": "@Microsoft.KeyVault(SecretUri=...)"}. Specs refer to them by name; the values never enter a spec.')
@secure()
param channelSecrets object = {}

@description('Where Sluice may send its credentials besides the Azure cloud it runs in, and which settings specs may name (each optional, comma-separated): {aksApiServers, appConfigStores, githubApiUrls, azureDevOpsUrls, specSettings}. specSettings entries are use:NAME (github, azureDevOps, aks, appConfig) or a bare channel setting; it defaults to the channelSecrets names. A spec that points a credential anywhere else is refused.')
param credentialRules object = {}

@description('How people, pipelines and Azure Monitor sign in; Sluice checks their Entra ID tokens itself. create: this deployment registers Sluice in Entra ID with its app roles (modules/sign-in.bicep; you must be allowed to register applications, and be Application Administrator or Cloud Application Administrator to grant Azure Monitor its webhook role). existing: authClientId and authObjectId name a registration you made (README, "Who may act"). none: Sluice\'s key (apiKey) only, and the names callers write are taken as written.')
@allowed(['create', 'existing', 'none'])
param signIn string = 'create'

@description('existing: the client (application) id of Sluice\'s app registration.')
param authClientId string = ''

@description('existing: the object id of that registration (the action group\'s secure webhook names it).')
param authObjectId string = ''

@description('existing: its Application ID URI, for which the action group asks its token (default api://<authClientId>).')
param authIdentifierUri string = ''

@description('create: object id of whoever deploys (azd sets AZURE_PRINCIPAL_ID; else `az ad signed-in-user show --query id -o tsv`): owner of the registration, which the secure webhook requires of its creator, and Sluice.Admin when a user.')
param adminPrincipalId string = ''

@description('create: User or ServicePrincipal (azd sets AZURE_PRINCIPAL_TYPE).')
@allowed(['User', 'ServicePrincipal'])
param adminPrincipalType string = 'User'

// Flex Consumption's lowest instance limit is 40 (Learn, "Flex Consumption
// plan hosting": instance count limits; Azure-Samples' Flex templates use
// @minValue(40)); a lower value fails at deployment, not here.
@description('Most instances Flex Consumption may scale out to (40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Days finished rollouts and settled releases are kept, with their history, from their creation (SLUICE_RETENTION_DAYS). The default keeps a year of release-health figures.')
@minValue(30)
@maxValue(3650)
param retentionDays int = 400

@description('Deployment windows and freezes every rollout keeps (SLUICE_WINDOWS), in the shape of a spec\'s policy.windows, e.g. {timeZone: \'Europe/Berlin\', allow: [{days: [\'Mon\', \'Tue\', \'Wed\', \'Thu\'], from: \'09:00\', to: \'16:00\'}], freezes: [{from: \'2026-12-21\', to: \'2027-01-04\', reason: \'holiday freeze\'}]}. Empty: none.')
param windows object = {}

var suffix = uniqueString(resourceGroup().id)
var targetGroups = union(targetResourceGroups, empty(targetResourceGroupList) ? [] : split(targetResourceGroupList, ','))
var storageName = take('${prefix}sluice${suffix}', 24)
var appName = '${prefix}-sluice-${suffix}'
var queueName = 'rollout-steps'
var deploymentContainer = 'app-package'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    supportsHttpsTrafficOnly: true
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Flex Consumption deploys one package from this container.
resource packages 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainer
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: '${prefix}-sluice-${suffix}'
  location: location
  // Standard: duplicate detection and scheduled messages. No SAS: Entra ID only.
  sku: { name: 'Standard', tier: 'Standard' }
  properties: { disableLocalAuth: true }
}

resource stepsQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: serviceBus
  name: queueName
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
  }
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${prefix}-sluice-logs'
  location: location
  properties: { sku: { name: 'PerGB2018' }, retentionInDays: 30 }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${prefix}-sluice-ai'
  location: location
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: workspace.id, DisableLocalAuth: true }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${prefix}-sluice-plan'
  location: location
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

// Every setting the code reads (src/shell/config.rs, SETTINGS); none holds a key.
var baseSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: storage.name }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
  { name: 'SLUICE_STORE', value: 'table' }
  { name: 'SLUICE_TABLE_ACCOUNT', value: storage.name }
  { name: 'SLUICE_QUEUE', value: 'servicebus' }
  { name: 'SLUICE_QUEUE_NAME', value: queueName }
  { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: '${serviceBus.name}.servicebus.windows.net' }
  { name: 'SLUICE_ALERT_TOKEN', value: alertToken }
  { name: 'SLUICE_API_KEY', value: apiKey }
  { name: 'SLUICE_RETENTION_DAYS', value: string(retentionDays) }
  { name: 'SLUICE_WINDOWS', value: empty(windows) ? '' : string(windows) }
  // Without sign-in the deployment says so: Sluice's key is the only check and the
  // names callers write are taken as written; `serve` refuses to start without a choice.
  { name: 'SLUICE_TRUST_NAMES', value: signIn == 'none' ? 'true' : 'false' }
  // Where credentials may go and which settings specs may name (src/ports/reach.rs): this cloud's
  // endpoints, the endpoints listed in credentialRules, and its specSettings (else the channel secrets' names).
  { name: 'SLUICE_AZURE_CLOUD', value: environment().name }
  { name: 'SLUICE_SPEC_SETTINGS', value: credentialRules.?specSettings ?? join(objectKeys(channelSecrets), ',') }
  { name: 'SLUICE_AKS_API_SERVERS', value: credentialRules.?aksApiServers ?? '' }
  { name: 'SLUICE_APP_CONFIG_STORES', value: credentialRules.?appConfigStores ?? '' }
  { name: 'SLUICE_GITHUB_API_URLS', value: credentialRules.?githubApiUrls ?? '' }
  { name: 'SLUICE_AZURE_DEVOPS_URLS', value: credentialRules.?azureDevOpsUrls ?? '' }
]
var channelSettings = [for secret in items(channelSecrets): { name: secret.key, value: secret.value }]

// Sluice's app registration, made here (signIn: create) or named (existing). It needs the
// dashboard's address, so its settings reach the app after it, in `settings` below.
module registration 'modules/sign-in.bicep' = if (signIn == 'create') {
  name: 'sluice-sign-in'
  params: {
    uniqueName: '${prefix}-sluice-${uniqueString(resourceGroup().id)}'
    dashboardUrl: 'https://${app.properties.defaultHostName}/api/dashboard'
    adminPrincipalId: adminPrincipalId
    adminPrincipalType: adminPrincipalType
  }
}
var entraClientId = signIn == 'create' ? registration!.outputs.clientId : authClientId
var entraObjectId = signIn == 'create' ? registration!.outputs.objectId : authObjectId
var namedIdentifierUri = empty(authIdentifierUri) ? 'api://${authClientId}' : authIdentifierUri
var entraIdentifierUri = signIn == 'create' ? registration!.outputs.identifierUri : namedIdentifierUri
// Sluice checks Entra ID's v2.0 tokens of this tenant for its registration (src/ports/identity/settings.rs).
var identitySettings = [
  { name: 'SLUICE_ENTRA_TENANT_ID', value: tenant().tenantId }
  { name: 'SLUICE_ENTRA_CLIENT_ID', value: entraClientId }
  { name: 'SLUICE_ENTRA_AUTHORITY', value: environment().authentication.loginEndpoint }
]

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount, instanceMemoryMB: instanceMemoryMB }
      runtime: { name: 'custom', version: '1.0' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: concat(baseSettings, channelSettings)
    }
  }
  // The app reads its package from this container, so it is there first.
  dependsOn: [packages]
}

// With sign-in, every setting again with the registration's (the whole set: `appsettings`
// replaces what the app had). Sluice checks tokens itself, whatever runs in front of it: no
// App Service authentication, which Flex Consumption's own page once said it lacked, and
// which would answer the dashboard's sign-in with a bare 401.
resource settings 'Microsoft.Web/sites/config@2024-04-01' = if (signIn != 'none') {
  parent: app
  name: 'appsettings'
  properties: toObject(concat(baseSettings, identitySettings, channelSettings), setting => setting.name, setting => setting.value)
}

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// The host's own storage (AzureWebJobsStorage__accountName) and the package container.
resource hostStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, app.id, roles.storageBlobDataOwner)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

// Rollout state and history (SLUICE_TABLE_ACCOUNT).
resource tableAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, app.id, roles.storageTableDataContributor)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

// The steps trigger receives; Sluice sends its next steps.
resource queueReceive 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: stepsQueue
  name: guid(stepsQueue.id, app.id, roles.serviceBusDataReceiver)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
  }
}

resource queueSend 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: stepsQueue
  name: guid(stepsQueue.id, app.id, roles.serviceBusDataSender)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
  }
}

// Telemetry with Entra ID (APPLICATIONINSIGHTS_AUTHENTICATION_STRING; local auth is off).
resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: insights
  name: guid(insights.id, app.id, roles.monitoringMetricsPublisher)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// Routing traffic, swapping slots and reading metrics of the apps being rolled out.
module targetAccess 'modules/target-access.bicep' = [for group in targetGroups: {
  name: 'sluice-target-${uniqueString(group)}'
  scope: resourceGroup(group)
  params: { principalId: app.identity.principalId }
}]

// Each router's role on its own target resource.
module routerAccess 'modules/router-access.bicep' = [for target in routerTargets: {
  name: 'sluice-router-${uniqueString(target.resourceGroup, target.provider, target.name)}'
  scope: resourceGroup(target.resourceGroup)
  params: { principalId: app.identity.principalId, target: { provider: target.provider, name: target.name } }
}]

// KQL analysis (logAnalytics / applicationInsights providers) on the specs' workspaces.
module workspaceAccess 'modules/workspace-reader.bicep' = [for ws in analyticsWorkspaces: {
  name: 'sluice-logs-${uniqueString(ws.resourceGroup, ws.name)}'
  scope: resourceGroup(ws.resourceGroup)
  params: { principalId: app.identity.principalId, workspaceName: ws.name }
}]

// Key Vault references in channelSecrets.
module keyVaultAccess 'modules/keyvault-reader.bicep' = if (!empty(keyVault)) {
  name: 'sluice-keyvault'
  scope: resourceGroup(keyVault.?resourceGroup ?? resourceGroup().name)
  params: { principalId: app.identity.principalId, vaultName: keyVault.?name ?? '' }
}

// Azure Monitor alerts on the rolled-out apps call Sluice through this action
// group. The alerts function is anonymous to the Functions host (no function
// key to fetch at deploy time) and checks its own token.
// With sign-in, a secure webhook: the action group presents an Entra ID token of its service
// principal, which holds ActionGroupsSecureWebhook on Sluice's registration (ARM WebhookReceiver,
// actionGroups_API.json 2023-01-01: useAadAuth, objectId "the webhook app object Id",
// identifierUri, tenantId). Else the token in the URL.
var tokenInUrl = {
  name: 'sluice'
  serviceUri: 'https://${app.properties.defaultHostName}/api/alerts?token=${alertToken}'
  useCommonAlertSchema: true
}
var secureWebhook = {
  name: 'sluice'
  serviceUri: 'https://${app.properties.defaultHostName}/api/alerts'
  useCommonAlertSchema: true
  useAadAuth: true
  objectId: entraObjectId
  identifierUri: entraIdentifierUri
  tenantId: tenant().tenantId
}

resource alerts 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${prefix}-sluice-alerts'
  location: 'global'
  properties: {
    groupShortName: 'sluice'
    enabled: true
    webhookReceivers: [signIn == 'none' ? tokenInUrl : secureWebhook]
  }
}

// azd saves each output under the name written here, casing and all
// (Azure/azure-dev cli/azd/pkg/infra/provisioning/deployment.go,
// OutputParametersFromArmOutputs), into the environment its hooks get and
// `azd env get-values` prints. Upper case, so scripts/azd-deploy, a shell and
// the CLI read them as written: SLUICE_URL is the CLI's own --url variable.
output SLUICE_FUNCTION_APP string = app.name
output SLUICE_URL string = 'https://${app.properties.defaultHostName}'
output SLUICE_ACTION_GROUP_ID string = alerts.id
output SLUICE_SERVICE_BUS_NAMESPACE string = serviceBus.name
output SLUICE_STORAGE_ACCOUNT string = storage.name
output SLUICE_PRINCIPAL_ID string = app.identity.principalId
