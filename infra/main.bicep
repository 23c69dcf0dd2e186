// Sluice on Azure Functions: a Linux function app running the `sluice`
// custom handler, its state in Table Storage, its steps on a Service Bus
// queue, its logs in Application Insights, and an action group whose
// webhook is Sluice's alert endpoint (Common Alert Schema).
//
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.example.json
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

@description('Resource group holding the App Service apps Sluice routes traffic for (it gets Website Contributor there).')
param targetResourceGroup string = resourceGroup().name

@description('Secrets the backlog and notification channels of your specs name, as app settings: e.g. {"GITHUB_TOKEN": "...", "TEAMS_URL": "..."}. Specs refer to them by name (tokenSetting, patSetting, urlSetting); the values never enter a spec. Key Vault references (@Microsoft.KeyVault(...)) work as values.')
@secure()
param channelSecrets object = {}

@description('Function plan: EP1 (Elastic Premium) keeps the custom handler warm.')
@allowed(['EP1', 'EP2', 'EP3'])
param planSku string = 'EP1'

var storageName = '${prefix}sluice${uniqueString(resourceGroup().id)}'
var appName = '${prefix}-sluice-${uniqueString(resourceGroup().id)}'
var queueName = 'rollout-steps'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: take(storageName, 24)
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
  }
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: '${prefix}-sluice-${uniqueString(resourceGroup().id)}'
  location: location
  // Standard: duplicate detection and scheduled messages.
  sku: { name: 'Standard', tier: 'Standard' }
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

// Sluice sends with SAS (the 0.21 crate has no Entra ID sending); send only.
resource sendRule 'Microsoft.ServiceBus/namespaces/queues/authorizationRules@2022-10-01-preview' = {
  parent: stepsQueue
  name: 'sluice-send'
  properties: { rights: ['Send'] }
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
  properties: { Application_Type: 'web', WorkspaceResourceId: workspace.id }
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${prefix}-sluice-plan'
  location: location
  kind: 'elastic'
  sku: { name: planSku, tier: 'ElasticPremium' }
  properties: { reserved: true, maximumElasticWorkerCount: 5 }
}

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: concat([
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'Custom' }
        { name: 'AzureWebJobsStorage', value: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'SLUICE_STORE', value: 'table' }
        // Tables through the managed identity (Storage Table Data Contributor below).
        { name: 'SLUICE_TABLE_ACCOUNT', value: storage.name }
        { name: 'SLUICE_QUEUE', value: 'servicebus' }
        { name: 'SLUICE_QUEUE_NAME', value: queueName }
        // The trigger reads with the managed identity; Sluice sends with the send-only rule.
        { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: '${serviceBus.name}.servicebus.windows.net' }
        { name: 'SLUICE_SERVICEBUS_CONNECTION', value: sendRule.listKeys().primaryConnectionString }
        { name: 'SLUICE_SERVICEBUS_LOCK_SECONDS', value: '60' }
        { name: 'SLUICE_ALERT_TOKEN', value: alertToken }
        { name: 'SLUICE_PUBLIC_URL', value: 'https://${appName}.azurewebsites.net' }
      ], [for secret in items(channelSecrets): { name: secret.key, value: secret.value }])
    }
  }
}

// A staging slot of this app must not drain the queue: binding settings stay with their slot.
resource stickySettings 'Microsoft.Web/sites/config@2023-12-01' = {
  parent: app
  name: 'slotConfigNames'
  properties: {
    appSettingNames: ['ServiceBusConnection__fullyQualifiedNamespace', 'SLUICE_SERVICEBUS_CONNECTION', 'SLUICE_QUEUE', 'SLUICE_QUEUE_NAME']
  }
}

var roles = {
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  monitoringReader: '43d0d8ad-25c7-4714-9337-8ba259a9fe05'
  logAnalyticsReader: '73c42c96-874c-492b-b04d-ab87d138a893'
}

resource tableAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, app.id, roles.storageTableDataContributor)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

resource queueAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: serviceBus
  name: guid(serviceBus.id, app.id, roles.serviceBusDataReceiver)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
  }
}

resource metricsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, app.id, roles.monitoringReader)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringReader)
  }
}

resource logsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: workspace
  name: guid(workspace.id, app.id, roles.logAnalyticsReader)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.logAnalyticsReader)
  }
}

// Routing traffic and swapping slots of the apps being rolled out.
module routingAccess 'routing-access.bicep' = {
  name: 'sluice-routing-access'
  scope: resourceGroup(targetResourceGroup)
  params: { principalId: app.identity.principalId }
}

// Azure Monitor alerts on the rolled-out apps call Sluice through this action group.
resource alerts 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${prefix}-sluice-alerts'
  location: 'global'
  properties: {
    groupShortName: 'sluice'
    enabled: true
    webhookReceivers: [
      {
        name: 'sluice'
        serviceUri: 'https://${app.properties.defaultHostName}/api/alerts?code=${listKeys('${app.id}/host/default', '2023-12-01').functionKeys.default}&token=${alertToken}'
        useCommonAlertSchema: true
      }
    ]
  }
}

output functionApp string = app.name
output sluiceUrl string = 'https://${app.properties.defaultHostName}'
output actionGroupId string = alerts.id
output serviceBusNamespace string = serviceBus.name
output storageAccount string = storage.name
