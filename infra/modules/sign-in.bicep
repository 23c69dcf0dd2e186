// Sluice's app registration in Entra ID, made by the deployment with the
// Microsoft Graph Bicep extension (GA as microsoftgraph/v1.0 1.0.0, Bicep
// 0.36.1 or later; azd brings a newer one). The deploying user must be
// allowed to register applications, and to grant Azure Monitor's action
// groups their role on it: Application Administrator or Cloud Application
// Administrator (Microsoft's own set-up script in Learn, "Action groups",
// "Configure authentication for Secure webhook", needs the same).
//
// What it holds (src/domain/access.rs, Role::value):
// - the app roles people, pipelines and the action group hold;
// - the delegated scope `access_as_user` the dashboard and the CLI sign in for,
//   pre-authorized for the Azure CLI so `sluice --entra` asks no consent;
// - v2.0 access tokens (`requestedAccessTokenVersion: 2`), the only ones Sluice
//   accepts, as the action-group page asks of a secure webhook's API;
// - the dashboard as a single-page app's redirect URI;
// - the role assignments: the action groups' service principal ("AzNS AAD
//   Webhook", app id 461e8683-5575-4561-ac7f-899cc907d62a) holds
//   ActionGroupsSecureWebhook, and the deploying user holds Sluice.Admin;
// - the deployer as an owner, which the action group's secure webhook
//   requires of whoever creates it.
extension microsoftGraphV1

@description('Unique in the tenant: the registration is found again by it on the next deployment.')
param uniqueName string

@description('The dashboard, as the browser comes back to it after signing in (https://<app>/api/dashboard).')
param dashboardUrl string

@description('Object id of whoever deploys (azd: AZURE_PRINCIPAL_ID): owner of the registration, which the action group\'s secure webhook requires of its creator (else AadWebhookResourceNotOwnedByCaller), and Sluice.Admin when a user.')
param adminPrincipalId string

@description('User or ServicePrincipal (azd: AZURE_PRINCIPAL_TYPE): only a user is made Sluice.Admin, a role for people.')
param adminPrincipalType string = 'User'

// Fixed per registration, so a redeployment keeps every assignment.
var roles = [
  { value: 'Sluice.Reader', members: ['User', 'Application'], says: 'Reads rollouts, releases, the gate and the report.' }
  { value: 'Sluice.Operator', members: ['User', 'Application'], says: 'Starts, aborts, promotes and retries rollouts and releases.' }
  { value: 'Sluice.Approver', members: ['User'], says: 'Approves and rejects at gates (a spec\'s approver list narrows it).' }
  { value: 'Sluice.Admin', members: ['User'], says: 'Everything, including overriding a policy.' }
  { value: 'ActionGroupsSecureWebhook', members: ['Application'], says: 'Azure Monitor\'s action groups post alerts.' }
]
var scopeId = guid(uniqueName, 'access_as_user')
// The Azure CLI's public client (Microsoft's first-party app id), pre-authorized for `sluice --entra`.
var azureCliAppId = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'
var actionGroupsAppId = '461e8683-5575-4561-ac7f-899cc907d62a'

var scope = {
  id: scopeId
  value: 'access_as_user'
  type: 'User'
  isEnabled: true
  adminConsentDisplayName: 'Use Sluice as the signed-in person'
  adminConsentDescription: 'Read and act on rollouts in Sluice as the signed-in person, within the roles they hold.'
  userConsentDisplayName: 'Use Sluice as you'
  userConsentDescription: 'Read and act on rollouts in Sluice as you, within the roles you hold.'
}

// Two passes over the same registration (found by uniqueName): Graph does not take a
// pre-authorization of a scope defined in the same request (microsoftgraph/microsoft-graph-docs#20177),
// and the registration cannot name its own appId in the request that creates it
// (msgraph-bicep-types#239). The first pass uses api://{tenant}/{name}, which tenants allow.
resource registration 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: 'Sluice (${uniqueName})'
  signInAudience: 'AzureADMyOrg'
  identifierUris: ['api://${tenant().tenantId}/${uniqueName}']
  api: { requestedAccessTokenVersion: 2, oauth2PermissionScopes: [scope] }
  appRoles: [
    for role in roles: {
      id: guid(uniqueName, role.value)
      value: role.value
      displayName: role.value
      description: role.says
      allowedMemberTypes: role.members
      isEnabled: true
    }
  ]
  spa: { redirectUris: [dashboardUrl] }
  owners: { relationships: [adminPrincipalId] }
}

// The second pass: api://{appId} (the form every tenant policy allows, and the audience Sluice
// accepts beside the client id), and the Azure CLI pre-authorized for the scope the first made.
resource registrationApi 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: registration.displayName
  identifierUris: ['api://${registration.appId}']
  api: {
    requestedAccessTokenVersion: 2
    oauth2PermissionScopes: [scope]
    preAuthorizedApplications: [{ appId: azureCliAppId, delegatedPermissionIds: [scopeId] }]
  }
}

resource sluice 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: registration.appId
}

// Present in every tenant that has used action groups' secure webhooks; else create it once
// (`az ad sp create --id 461e8683-5575-4561-ac7f-899cc907d62a`, as Microsoft's script does).
resource actionGroups 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: actionGroupsAppId
}

resource actionGroupsMayAlert 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: actionGroups.id
  resourceId: sluice.id
  appRoleId: guid(uniqueName, 'ActionGroupsSecureWebhook')
}

resource deployerIsAdmin 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (adminPrincipalType == 'User') {
  principalId: adminPrincipalId
  resourceId: sluice.id
  appRoleId: guid(uniqueName, 'Sluice.Admin')
}

output clientId string = registration.appId
output objectId string = registration.id
output identifierUri string = registrationApi.identifierUris[0]
