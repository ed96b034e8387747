package sluice

// Model tiers. Starter-tier models are open to every plan; other models need
// a plan whose Models is ModelsAll.
const (
	TierStarter  = "starter"
	TierStandard = "standard"
)

// Which models a plan may use.
const (
	ModelsStarter = "starter" // starter-tier models only
	ModelsAll     = "all"
)

// Plan is what an account buys: its hourly and daily limits, the models it
// may use and whether it may use the HTTP API (plans without API access use
// the Telegram bot only).
type Plan struct {
	ID     string
	Name   string // display name, as in "on VIP plan"
	Hour   Limit
	Day    Limit
	Models string // ModelsStarter or ModelsAll
	API    bool
}

// AllowsModel reports whether the plan may use m.
func (p *Plan) AllowsModel(m *Model) bool {
	return p.Models == ModelsAll || m.Tier == TierStarter
}

// Model is an image model that the gateway offers.
type Model struct {
	ID      string
	Tier    string
	OwnedBy string
}

// DefaultPlans are the plans of CONTRACT.md §2.
func DefaultPlans() []Plan {
	return []Plan{
		{ID: "starter", Name: "Starter", Hour: 5, Day: 20, Models: ModelsStarter},
		{ID: "basic", Name: "Basic", Hour: 30, Day: 200, Models: ModelsAll},
		{ID: "pro", Name: "Pro", Hour: 60, Day: 500, Models: ModelsAll},
		{ID: "vip", Name: "VIP", Hour: 100, Day: 1000, Models: ModelsAll, API: true},
		{ID: "elite", Name: "Elite", Hour: Unlimited, Day: Unlimited, Models: ModelsAll, API: true},
	}
}

// DefaultModels are the models of the built-in demo generator: two
// starter-tier models and two that need Basic or above.
func DefaultModels() []Model {
	return []Model{
		{ID: "sluice-sketch", Tier: TierStarter, OwnedBy: "sluice"},
		{ID: "sluice-mosaic", Tier: TierStarter, OwnedBy: "sluice"},
		{ID: "sluice-studio", Tier: TierStandard, OwnedBy: "sluice"},
		{ID: "sluice-ultra", Tier: TierStandard, OwnedBy: "sluice"},
	}
}
