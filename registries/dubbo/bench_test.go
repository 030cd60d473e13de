package dubbo

import "testing"

func BenchmarkParseProviderURL(b *testing.B) {
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(sampleEncoded)))
		for b.Loop() {
			if _, err := ParseProviderURL(sampleEncoded); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse+instance", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(sampleEncoded)))
		for b.Loop() {
			u, err := ParseProviderURL(sampleEncoded)
			if err != nil {
				b.Fatal(err)
			}
			if _, skip := ProviderInstance(u); skip != "" {
				b.Fatal(skip)
			}
		}
	})
}
