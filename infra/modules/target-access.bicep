// On a resource group of apps being rolled out: Website Contributor (ramp-up
// rules, slot swap, stop: Microsoft.Web/sites/config/write,
// sites/slots/slotsswap/action, sites/slots/stop/action, sites/slots/read)
// and Monitoring Reader (Azure Monitor metrics of those apps).

param principalId string

var websiteContributor = 'de139f84-1756-47ae-9be6-808fbbe84772'
var monitoringReader = '43d0d8ad-25c7-4714-9337-8ba259a9fe05'

resource routing 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, websiteContributor)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', websiteContributor)
  }
}

resource metrics 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, monitoringReader)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringReader)
  }
}
