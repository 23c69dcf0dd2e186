// What each router needs on its target, granted on the target resource
// itself (never its resource group), one assignment per router:
// - appServiceSlots: Website Contributor on the app (ramp-up rules, slot swap, stop);
// - containerApps:   Container Apps Contributor on the container app (ingress traffic weights, revision deactivate);
// - frontDoor:       CDN Profile Contributor on the Front Door profile (origin weights and enabled state);
// - apiManagement:   API Management Service Contributor on the service (the pool backend's weights);
// - appConfigFlag:   App Configuration Data Owner on the store (read and write the feature flag);
// - gatewayApi:      Azure Kubernetes Service RBAC Writer on the cluster (read and apply the HTTPRoute; the
//                    cluster needs Microsoft Entra integration with Azure RBAC). Bicep cannot name a
//                    namespace as a scope: to bind it to the HTTPRoute's namespace only, assign the same
//                    role with `az role assignment create --scope <cluster id>/namespaces/<namespace>`.
// `target` is {provider, name}: the resource's name in this module's resource group.

param principalId string
param target object

var roles = {
  appServiceSlots: 'de139f84-1756-47ae-9be6-808fbbe84772' // Website Contributor
  containerApps: '358470bc-b998-42bd-ab17-a7e34c199c0f' // Container Apps Contributor
  frontDoor: 'ec156ff8-a8d1-4d15-830c-5b80698ca432' // CDN Profile Contributor
  apiManagement: '312a565d-c81f-4fd8-895a-4e21e48d571c' // API Management Service Contributor
  appConfigFlag: '5ae67dd6-50cb-40e7-96ff-dc2bfa4b606b' // App Configuration Data Owner
  gatewayApi: 'a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb' // Azure Kubernetes Service RBAC Writer
}
var role = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles[target.provider])

resource site 'Microsoft.Web/sites@2023-12-01' existing = if (target.provider == 'appServiceSlots') {
  name: target.name
}

resource siteAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target.provider == 'appServiceSlots') {
  scope: site
  name: guid(site.id, principalId, role)
  properties: { principalId: principalId, principalType: 'ServicePrincipal', roleDefinitionId: role }
}

resource containerApp 'Microsoft.App/containerApps@2025-01-01' existing = if (target.provider == 'containerApps') {
  name: target.name
}

resource containerAppAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target.provider == 'containerApps') {
  scope: containerApp
  name: guid(containerApp.id, principalId, role)
  properties: { principalId: principalId, principalType: 'ServicePrincipal', roleDefinitionId: role }
}

resource profile 'Microsoft.Cdn/profiles@2024-02-01' existing = if (target.provider == 'frontDoor') {
  name: target.name
}

resource profileAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target.provider == 'frontDoor') {
  scope: profile
  name: guid(profile.id, principalId, role)
  properties: { principalId: principalId, principalType: 'ServicePrincipal', roleDefinitionId: role }
}

resource gateway 'Microsoft.ApiManagement/service@2024-05-01' existing = if (target.provider == 'apiManagement') {
  name: target.name
}

resource gatewayAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target.provider == 'apiManagement') {
  scope: gateway
  name: guid(gateway.id, principalId, role)
  properties: { principalId: principalId, principalType: 'ServicePrincipal', roleDefinitionId: role }
}

resource store 'Microsoft.AppConfiguration/configurationStores@2024-05-01' existing = if (target.provider == 'appConfigFlag') {
  name: target.name
}

resource storeAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target.provider == 'appConfigFlag') {
  scope: store
  name: guid(store.id, principalId, role)
  properties: { principalId: principalId, principalType: 'ServicePrincipal', roleDefinitionId: role }
}

resource cluster 'Microsoft.ContainerService/managedClusters@2024-09-01' existing = if (target.provider == 'gatewayApi') {
  name: target.name
}

resource clusterAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (target.provider == 'gatewayApi') {
  scope: cluster
  name: guid(cluster.id, principalId, role)
  properties: { principalId: principalId, principalType: 'ServicePrincipal', roleDefinitionId: role }
}
