// Lets Sluice set ramp-up rules and swap slots on the apps in this resource group.

param principalId string

var websiteContributor = 'de139f84-1756-47ae-9be6-808fbbe84772'

resource routing 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, websiteContributor)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', websiteContributor)
  }
}
